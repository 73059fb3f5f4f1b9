from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from imagery.common.db.migrate import MigrationError, load_migrations, migrate
from imagery.devstack.fixtures import PostgresServer

pytestmark = pytest.mark.integration


@pytest.fixture
async def empty_database(postgres_server: PostgresServer) -> str:
    return await postgres_server.new_database(migrated=False)


async def _columns(dsn: str, table: str) -> dict[str, tuple[str, str]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT column_name, data_type, is_nullable FROM information_schema.columns"
            " WHERE table_name = $1",
            table,
        )
    finally:
        await conn.close()
    return {r["column_name"]: (r["data_type"], r["is_nullable"]) for r in rows}


async def test_an_empty_database_gets_the_schema_of_the_design(empty_database: str) -> None:
    applied = await migrate(empty_database)
    assert applied == [m.name for m in load_migrations()]

    records = await _columns(empty_database, "image_records")
    assert records["size_bytes"] == ("bigint", "YES")
    assert records["sha256"] == ("text", "YES")
    assert records["id"][1] == "NO"
    assert "type" not in records
    for name in (
        "status",
        "content_type",
        "file_name",
        "object_key",
        "failure_reason",
        "created_at",
        "updated_at",
    ):
        assert name in records
    blobs = await _columns(empty_database, "image_blobs")
    assert blobs["reference_count"] == ("integer", "NO")

    conn = await asyncpg.connect(empty_database)
    try:
        triggers = await conn.fetch(
            "SELECT tgrelid::regclass::text AS tab, tgname FROM pg_trigger"
            " WHERE NOT tgisinternal ORDER BY tgname"
        )
        assert [(t["tab"], t["tgname"]) for t in triggers] == [
            ("image_records", "image_records_delete_event"),
            ("image_records", "image_records_state_notify"),
            ("image_records", "image_records_status_event"),
            *(("image_records", f"project_usage_on_{op}") for op in ("delete", "insert", "update")),
        ], (
            "the only triggers keep project usage (0012), announce image changes (0015) and "
            "write image events (0026); updated_at is set by each UPDATE"
        )
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "INSERT INTO image_blobs"
                " (sha256, format, width, height, size_bytes, reference_count)"
                " VALUES (repeat('a', 64), 'png', 1, 1, 1, -1)"
            )
    finally:
        await conn.close()


async def test_running_twice_applies_nothing_the_second_time(empty_database: str) -> None:
    assert await migrate(empty_database)
    assert await migrate(empty_database) == []


async def test_concurrent_runners_apply_each_migration_exactly_once(empty_database: str) -> None:
    results = await asyncio.gather(*(migrate(empty_database) for _ in range(6)))
    applied = [name for result in results for name in result]
    assert sorted(applied) == sorted(m.name for m in load_migrations())
    conn = await asyncpg.connect(empty_database)
    try:
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(
            load_migrations()
        )
    finally:
        await conn.close()


async def test_an_applied_migration_that_was_edited_is_refused(
    empty_database: str, tmp_path: Path
) -> None:
    (tmp_path / "0001_first.sql").write_text("CREATE TABLE t1 (id int);")
    assert await migrate(empty_database, tmp_path) == ["0001_first.sql"]
    (tmp_path / "0001_first.sql").write_text("CREATE TABLE t1 (id bigint);")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        await migrate(empty_database, tmp_path)


async def test_a_failing_migration_leaves_nothing_half_applied(
    empty_database: str, tmp_path: Path
) -> None:
    (tmp_path / "0001_ok.sql").write_text("CREATE TABLE ok (id int);")
    (tmp_path / "0002_bad.sql").write_text("CREATE TABLE half (id int); SELECT no_such_function();")
    with pytest.raises(asyncpg.UndefinedFunctionError):
        await migrate(empty_database, tmp_path)
    conn = await asyncpg.connect(empty_database)
    try:
        assert await conn.fetchval("SELECT to_regclass('half')") is None
        assert await conn.fetchval("SELECT array_agg(version) FROM schema_migrations") == [1]
    finally:
        await conn.close()


def _with_extra(tmp_path: Path, name: str, sql: str) -> Path:
    """The real migrations plus one more, in a directory of this test's own."""
    for migration in load_migrations():
        (tmp_path / migration.name).write_text(migration.sql)
    (tmp_path / name).write_text(sql)
    return tmp_path


async def test_a_migration_outside_a_transaction_builds_an_index_concurrently(
    empty_database: str, tmp_path: Path
) -> None:
    directory = _with_extra(
        tmp_path,
        "0999_concurrent_index.sql",
        "-- imagery:no-transaction\n"
        "-- built without blocking writes\n"
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS image_records_file_name_idx\n"
        "    ON image_records (file_name);\n"
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS image_records_content_type_idx\n"
        "    ON image_records (content_type);\n",
    )
    applied = await migrate(empty_database, directory)
    assert applied[-1] == "0999_concurrent_index.sql"
    conn = await asyncpg.connect(empty_database)
    try:
        valid = await conn.fetch(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " WHERE c.relname LIKE 'image_records_%_idx' AND i.indisvalid"
        )
    finally:
        await conn.close()
    names = {r["relname"] for r in valid}
    assert {"image_records_file_name_idx", "image_records_content_type_idx"} <= names


async def test_a_migration_never_makes_reads_queue_behind_it(
    empty_database: str, tmp_path: Path
) -> None:
    """A long transaction holds a lock the migration needs. Without a lock timeout the
    migration would wait at the head of the lock queue and every read would wait behind it."""
    await migrate(empty_database)
    directory = _with_extra(
        tmp_path, "0999_new_column.sql", "ALTER TABLE image_records ADD COLUMN note text;\n"
    )
    holder = await asyncpg.connect(empty_database)
    reader = await asyncpg.connect(empty_database)
    try:
        holding = holder.transaction()
        await holding.start()
        await holder.fetch("SELECT 1 FROM image_records LIMIT 1")  # a long read transaction
        migrating = asyncio.create_task(migrate(empty_database, directory, lock_timeout_ms=100))
        await asyncio.sleep(0.3)
        assert not migrating.done(), "still trying: the lock is held"
        await reader.execute("SET statement_timeout = 1000")
        assert await reader.fetchval("SELECT count(*) FROM image_records") == 0, (
            "reads go on while the migration waits for its lock"
        )
        await holding.rollback()
        assert await migrating == ["0999_new_column.sql"], "applied once the lock was free"
    finally:
        await holder.close()
        await reader.close()


async def test_a_migration_that_never_gets_its_lock_fails_naming_it(
    empty_database: str, tmp_path: Path
) -> None:
    await migrate(empty_database)
    directory = _with_extra(
        tmp_path, "0999_new_column.sql", "ALTER TABLE image_records ADD COLUMN note text;\n"
    )
    holder = await asyncpg.connect(empty_database)
    try:
        async with holder.transaction():
            await holder.fetch("SELECT 1 FROM image_records LIMIT 1")
            with pytest.raises(MigrationError, match="could not take its locks"):
                await migrate(empty_database, directory, lock_timeout_ms=50)
    finally:
        await holder.close()
    assert "note" not in await _columns(empty_database, "image_records"), "nothing half done"


PROJECTS = 9  # 0009_projects: the first migration that knows projects
USAGE = 13  # 0013_project_usage


def _up_to(tmp_path: Path, last: int) -> Path:
    """The real migrations up to and including `last`, in a directory of this test's own."""
    directory = tmp_path / f"up_to_{last:04d}"
    directory.mkdir()
    for migration in load_migrations():
        if migration.version <= last:
            (directory / migration.name).write_text(migration.sql)
    return directory


_BLOB = "ab" * 32
_OLD_RECORDS = {  # id -> (status, sha256, failure_reason), written before projects existed
    "01HZZZ00000000000000000001": ("ready", _BLOB, None),
    "01HZZZ00000000000000000002": ("ready", _BLOB, None),
    "01HZZZ00000000000000000003": ("pending", None, None),
    "01HZZZ00000000000000000004": ("failed", None, "UNSUPPORTED_FORMAT"),
}


@pytest.fixture
async def upgraded_database(empty_database: str, tmp_path: Path) -> str:
    """A database with records and a blob from before projects, then migrated to the end."""
    await migrate(empty_database, _up_to(tmp_path, PROJECTS - 1))
    conn = await asyncpg.connect(empty_database)
    try:
        await conn.execute(
            "INSERT INTO image_blobs (sha256, format, width, height, size_bytes,"
            " reference_count, stored_at) VALUES ($1, 'jpeg', 640, 480, 1234, 2, now())",
            _BLOB,
        )
        await conn.executemany(
            "INSERT INTO image_records (id, status, content_type, file_name, object_key,"
            " sha256, failure_reason) VALUES ($1, $2, 'image/jpeg', 'a.jpg', 'uploads/' || $1,"
            " $3, $4)",
            [(image_id, *fields) for image_id, fields in _OLD_RECORDS.items()],
        )
    finally:
        await conn.close()
    applied = await migrate(empty_database)
    assert applied == [m.name for m in load_migrations() if m.version >= PROJECTS]
    return empty_database


async def test_records_from_before_projects_are_in_the_default_project(
    upgraded_database: str,
) -> None:
    conn = await asyncpg.connect(upgraded_database)
    try:
        rows = await conn.fetch(
            "SELECT id, status, sha256, project_id, digest FROM image_records ORDER BY id"
        )
    finally:
        await conn.close()
    assert {r["id"]: (r["status"], r["sha256"]) for r in rows} == {
        image_id: (status, sha256) for image_id, (status, sha256, _) in _OLD_RECORDS.items()
    }
    assert {r["project_id"] for r in rows} == {"default"}
    assert [r["digest"] for r in rows] == [None] * len(_OLD_RECORDS), "bytes = content address"


async def test_the_previous_release_keeps_inserting_and_projects_must_exist(
    upgraded_database: str,
) -> None:
    """The migration Job runs before the rollout: upload pods of the release before projects
    insert without a project until they are replaced, into `default`."""
    conn = await asyncpg.connect(upgraded_database)
    try:
        insert = (
            "INSERT INTO image_records (id, status, content_type, file_name, object_key{})"
            " VALUES ($1, 'pending', 'image/png', 'b.png', 'uploads/' || $1{})"
        )
        await conn.execute(insert.format("", ""), "01HZZZ00000000000000000005")
        assert (
            await conn.fetchval(
                "SELECT project_id FROM image_records WHERE id = $1", "01HZZZ00000000000000000005"
            )
            == "default"
        )
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await conn.execute(
                insert.format(", project_id", ", $2"), "01HZZZ00000000000000000006", "nowhere"
            )
        await conn.execute(
            insert.format(", project_id", ", $2"), "01HZZZ00000000000000000007", "default"
        )
    finally:
        await conn.close()


async def _project_key_and_index(dsn: str) -> tuple[bool, bool, str]:
    """Whether the project foreign key is validated and the (project_id, id) index valid."""
    conn = await asyncpg.connect(dsn)
    try:
        validated = await conn.fetchval(
            "SELECT bool_and(convalidated) FROM pg_constraint WHERE conname IN"
            " ('image_records_project_id_fkey', 'image_records_digest_check')"
        )
        index = await conn.fetchrow(
            "SELECT i.indisvalid, pg_get_indexdef(i.indexrelid) AS definition FROM pg_index i"
            " WHERE i.indexrelid = to_regclass('image_records_project_id_idx')"
        )
    finally:
        await conn.close()
    assert index is not None, "image_records_project_id_idx exists"
    return validated, index["indisvalid"], index["definition"]


async def test_the_project_key_is_validated_and_its_index_valid(upgraded_database: str) -> None:
    validated, index_valid, definition = await _project_key_and_index(upgraded_database)
    assert validated
    assert index_valid
    assert definition.endswith("ON public.image_records USING btree (project_id, id)")


async def test_an_index_build_cut_short_by_a_long_transaction_ends_valid(
    empty_database: str, tmp_path: Path
) -> None:
    """A processor transaction that updated a record is still open when 0010 starts, and
    ends a second later: the migration may wait or retry, but must end with a valid index."""
    await migrate(empty_database, _up_to(tmp_path, PROJECTS))
    holder = await asyncpg.connect(empty_database)
    try:
        await holder.execute(
            "INSERT INTO image_records (id, status, content_type, file_name, object_key,"
            " project_id) VALUES ($1, 'pending', 'image/png', 'c.png', 'uploads/' || $1,"
            " 'default')",
            "01HZZZ00000000000000000008",
        )
        holding = holder.transaction()
        await holding.start()
        await holder.execute(
            "UPDATE image_records SET updated_at = now() WHERE id = $1",
            "01HZZZ00000000000000000008",
        )

        async def end_in_a_second() -> None:
            await asyncio.sleep(1.0)
            await holding.rollback()

        ending = asyncio.create_task(end_in_a_second())
        applied = await migrate(empty_database, _up_to(tmp_path, PROJECTS + 1), lock_timeout_ms=100)
        await ending
    finally:
        await holder.close()
    assert applied == ["0010_project_indexes.sql"]
    validated, index_valid, _ = await _project_key_and_index(empty_database)
    assert validated
    assert index_valid, "the index serves reads"


async def test_usage_starts_from_what_was_stored_before_it_was_counted(
    empty_database: str, tmp_path: Path
) -> None:
    await migrate(empty_database, _up_to(tmp_path, USAGE - 1))
    conn = await asyncpg.connect(empty_database)
    try:
        await conn.executemany(
            "INSERT INTO image_records (id, status, content_type, file_name, object_key,"
            " size_bytes, failure_reason, created_at) VALUES ($1, $2, 'image/jpeg', 'a.jpg',"
            " 'uploads/' || $1, $3, $4, now() - make_interval(days => $5))",
            [
                ("01HZZZ00000000000000000001", "ready", 1000, None, 0),
                ("01HZZZ00000000000000000002", "ready", 500, None, 3),
                ("01HZZZ00000000000000000003", "pending", None, None, 0),
                ("01HZZZ00000000000000000004", "failed", 9, "CORRUPT", 0),
            ],
        )
        await migrate(empty_database)
        row = await conn.fetchrow(
            "SELECT images, bytes, day_uploads FROM project_usage WHERE project_id = 'default'"
        )
        others = await conn.fetchval("SELECT count(*) FROM project_usage WHERE images <> 0")
    finally:
        await conn.close()
    assert row is not None
    assert dict(row) == {"images": 3, "bytes": 1500, "day_uploads": 3}
    assert others == 1, "every project has a row; only `default` stores anything"
