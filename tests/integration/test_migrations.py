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
        assert await conn.fetchval("SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal") == 0
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
