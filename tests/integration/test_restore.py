"""A database restored from a backup, on a bucket with S3 versioning, repaired by the
reconciler (issue 18): real Postgres (the backup a copy of the live database, restored in its
place), the local S3 with versioning on, real images made by the processing path and the
isolated job runner. Then `imagery-admin reconcile` as an operator runs it: report only,
`--dry-run`, `--remove-orphans`, with a processor running its operator jobs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from imagery.common.aws.clients import s3_client
from imagery.common.config import AwsSettings
from imagery.common.db.images import PostgresImageRepository
from imagery.common.domain import ImageStatus
from imagery.common.storage_keys import GLOBAL_SCOPE, original_key, variant_key
from imagery.common.tenancy import DEFAULT_PROJECT
from imagery.devstack.fixtures import PostgresServer
from imagery.processor.adapters.admin_jobs import PostgresAdminJobs
from imagery.processor.adapters.isolation import IsolatedRunner
from imagery.processor.adapters.postgres import PostgresContentInventory, PostgresContentStore
from imagery.processor.adapters.reconcile_jobs import PostgresReconcileJobs
from imagery.processor.adapters.s3 import S3ObjectStore
from imagery.processor.imaging import Limits
from imagery.processor.use_cases.collect_content import ContentCollector
from imagery.processor.use_cases.reconcile import Reconciler
from imagery.processor.use_cases.reconcile_job import ReconcileJob
from imagery.processor.use_cases.run_admin_jobs import RunAdminJobs
from tests import images
from tests.integration.test_admin_cli import Run, admin, one_line
from tests.render_stack import DEFAULT_PRESETS, SPEC, upload

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

pytestmark = pytest.mark.integration
GRACE = 3600
FORMATS = ["webp", "jpeg"]


@pytest.fixture
async def bucket(aws_settings: AwsSettings) -> AsyncIterator[S3Client]:
    """The test's bucket, versioned as the restore runbook asks for `originals/` and
    `variants/`."""
    async with s3_client(aws_settings) as client:
        await client.put_bucket_versioning(
            Bucket=aws_settings.bucket, VersioningConfiguration={"Status": "Enabled"}
        )
        yield client


def _reconciler(
    pool: asyncpg.Pool, store: S3ObjectStore, runner: IsolatedRunner, *, now: datetime
) -> Reconciler:
    """The processor's reconciler, wired as bootstrap wires it (versions: the bucket)."""
    return Reconciler(
        store,
        PostgresContentInventory(pool),
        store,
        runner,
        grace_seconds=GRACE,
        limits=Limits(),
        spec=SPEC,
        max_original_bytes=10 * 1024**2,
        versions=store,
        clock=lambda: now,
    )


async def _pool(dsn: str) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=5)
    assert pool is not None
    return pool


async def _as_admin(server: PostgresServer, sql: str) -> None:
    conn = await asyncpg.connect(server.admin_dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _keys(pool: asyncpg.Pool, image_id: str) -> list[str]:
    """Every object the image's record needs: its original and its variants."""
    record = await PostgresImageRepository(pool).find_by_id(DEFAULT_PROJECT, image_id)
    assert record is not None and record.sha256 is not None
    return [original_key(GLOBAL_SCOPE, record.sha256), *(v.key for v in record.variants)]


async def _present(store: S3ObjectStore, keys: list[str]) -> list[bool]:
    return [await store.head(key) is not None for key in keys]


async def _collect(pool: asyncpg.Pool, store: S3ObjectStore, keys: list[str]) -> None:
    """The processor's content collector, run until the content's objects are gone."""
    collector = ContentCollector(PostgresContentStore(pool), store, grace_seconds=0)
    for _ in range(5):
        await collector.sweep()
        if not any(await _present(store, keys)):
            return
    raise AssertionError(f"the collector left {keys}")


async def _expire_earlier_versions(client: S3Client, bucket: str, keys: list[str]) -> None:
    """What the noncurrent-version expiration rule does N days after a deletion."""
    for key in keys:
        listed = await client.list_object_versions(Bucket=bucket, Prefix=key)
        for version in [*listed.get("Versions", []), *listed.get("DeleteMarkers", [])]:
            await client.delete_object(Bucket=bucket, Key=key, VersionId=version["VersionId"])


async def _unserved(pool: asyncpg.Pool, store: S3ObjectStore) -> dict[str, list[str]]:
    """Every READY image of the database against the bucket: what keeps one from being
    served, by image id (none: each preset's variant rows in every format, their objects
    and the original exist, and the download target delivery signs points at an object)."""
    repo = PostgresImageRepository(pool)
    ready = await pool.fetch("SELECT id FROM image_records WHERE status = 'ready' ORDER BY id")
    wrong: dict[str, list[str]] = {}
    for row in ready:
        image_id, problems = row["id"], []
        record = await repo.find_by_id(DEFAULT_PROJECT, image_id)
        assert record is not None and record.sha256 is not None
        wanted = {(p.name, f) for p in DEFAULT_PRESETS for f in p.formats}
        if {(v.name, v.format) for v in record.variants} != wanted:
            problems.append(f"variants {sorted((v.name, v.format) for v in record.variants)}")
        for key in await _keys(pool, image_id):
            if await store.head(key) is None:
                problems.append(f"no object {key}")
        for preset in DEFAULT_PRESETS:
            targets = await repo.find_download_targets(
                DEFAULT_PROJECT, [image_id], preset.name, FORMATS
            )
            if not targets[0].servable or await store.head(targets[0].key or "") is None:
                problems.append(f"{preset.name} is not served")
        if problems:
            wrong[image_id] = problems
    return wrong


async def test_a_restored_database_is_served_again_and_what_it_never_knew_waits_its_grace(
    postgres_server: PostgresServer,
    database_url: str,
    store: S3ObjectStore,
    bucket: S3Client,
    aws_settings: AwsSettings,
    runner: IsolatedRunner,
) -> None:
    pool = await _pool(database_url)
    kept = await upload(pool, store, runner, DEFAULT_PROJECT, images.jpeg(120, 90))
    collected = await upload(pool, store, runner, DEFAULT_PROJECT, images.jpeg(130, 90))
    expired = await upload(pool, store, runner, DEFAULT_PROJECT, images.jpeg(140, 90))
    keys = {image: await _keys(pool, image) for image in (kept, collected, expired)}
    await pool.close()  # a template copy wants no session on its source
    live = urlsplit(database_url).path.lstrip("/")
    backup = f"{live}_backup"
    await _as_admin(postgres_server, f"CREATE DATABASE {backup} TEMPLATE {live}")
    try:
        # After the backup: two images deleted and their content collected (one's earlier
        # versions expired since), one image uploaded.
        pool = await _pool(database_url)
        repo = PostgresImageRepository(pool)
        for image in (collected, expired):
            assert await repo.delete(DEFAULT_PROJECT, image, principal="key:test") is not None
        await _collect(pool, store, keys[collected] + keys[expired])
        await _expire_earlier_versions(bucket, aws_settings.bucket, keys[expired])
        later = await upload(pool, store, runner, DEFAULT_PROJECT, images.jpeg(150, 90))
        keys[later] = await _keys(pool, later)
        await pool.close()
        # The backup restored as the live database.
        await _as_admin(postgres_server, f"DROP DATABASE {live} WITH (FORCE)")
        await _as_admin(postgres_server, f"ALTER DATABASE {backup} RENAME TO {live}")
    finally:
        await _as_admin(postgres_server, f"DROP DATABASE IF EXISTS {backup} WITH (FORCE)")

    pool = await _pool(database_url)
    try:
        repo = PostgresImageRepository(pool)
        assert set(await _unserved(pool, store)) == {collected, expired}, "before: both broken"
        dry = await _with_a_processor(
            pool, store, runner, "reconcile", "--dry-run", dsn=database_url, now=datetime.now(UTC)
        )
        assert dry.code == 0, dry.err
        assert "1 originals would be brought back from an earlier version" in dry.out, dry.out
        assert (
            "1 contents unrecoverable, no object and no earlier version left: 1 READY images "
            f"would stay READY, answered IMAGE_CONTENT_LOST until the same file is uploaded "
            f"again\n      images/{expired}\n"
        ) in dry.out
        assert f"{len(keys[later])} orphans younger than 1 h (kept: " in dry.out
        assert set(await _unserved(pool, store)) == {collected, expired}, "a dry run repairs none"

        report = await _reconciler(pool, store, runner, now=datetime.now(UTC)).run()

        assert report.versioning == "Enabled"
        assert report.originals_restored == [keys[collected][0]], "from its earlier version"
        assert sorted(report.variants_rebuilt) == sorted(keys[collected][1:])
        assert list(await _unserved(pool, store)) == [expired], (
            "every READY image is served again but the one with nothing left"
        )
        expired_record = await repo.find_by_id(DEFAULT_PROJECT, expired)
        assert expired_record is not None and expired_record.sha256 is not None
        assert report.content_lost == [expired_record.sha256]
        # Still READY, with no variant: delivery answers IMAGE_CONTENT_LOST for it.
        assert (expired_record.status, expired_record.variants) == (ImageStatus.READY, ())
        assert sorted(report.orphans_in_grace) == sorted(keys[later]), "unknown, but young"
        assert (report.orphans_deleted, report.orphans_kept) == ([], [])
        assert all(await _present(store, keys[later])), "kept within the grace"
        assert all(await _present(store, keys[kept])), "nothing a record needs was touched"

        past_grace = datetime.now(UTC) + timedelta(seconds=GRACE + 60)
        again = await _reconciler(pool, store, runner, now=past_grace).run()
        assert sorted(again.orphans_deleted) == sorted(keys[later]), "removed after the grace"
        assert (again.originals_restored, again.variants_rebuilt) == ([], [])
        assert not any(await _present(store, keys[later]))
        assert list(await _unserved(pool, store)) == [expired]
    finally:
        await pool.close()


# --- imagery-admin reconcile ---------------------------------------------------------------


async def _with_a_processor(
    pool: asyncpg.Pool,
    store: S3ObjectStore,
    runner: IsolatedRunner,
    *args: str,
    dsn: str,
    now: datetime | None = None,
) -> Run:
    """Run the command while a processor runs operator jobs (its reconciler's clock `now`,
    by default past the grace of everything in the bucket)."""
    now = now or datetime.now(UTC) + timedelta(seconds=GRACE + 60)
    jobs = PostgresAdminJobs(pool)
    reconcile = ReconcileJob(
        _reconciler(pool, store, runner, now=now), PostgresReconcileJobs(pool), beat_seconds=0
    )
    stop = asyncio.Event()

    async def a_processor() -> None:
        while not stop.is_set():
            await RunAdminJobs(jobs, store, reconcile=reconcile)()
            await asyncio.sleep(0.05)

    processor = asyncio.create_task(a_processor())
    try:
        return await admin(*args, database_url=dsn)
    finally:
        stop.set()
        await processor


async def test_reconcile_reports_repairs_and_removes_orphans_only_when_asked(
    pool: asyncpg.Pool,
    database_url: str,
    store: S3ObjectStore,
    bucket: S3Client,
    runner: IsolatedRunner,
) -> None:
    whole = await upload(pool, store, runner, DEFAULT_PROJECT, images.jpeg(120, 90))
    gone = await upload(pool, store, runner, DEFAULT_PROJECT, images.jpeg(130, 90))
    needed = await _keys(pool, whole) + await _keys(pool, gone)
    lost_variant = (await _keys(pool, whole))[1]
    await store.delete(lost_variant)
    for key in await _keys(pool, gone):  # deleted by hand: versioning keeps their bytes
        await store.delete(key)
    strays = [
        original_key(GLOBAL_SCOPE, "e" * 64),
        variant_key(GLOBAL_SCOPE, "e" * 64, "small", "webp"),
    ]
    for key in strays:
        await store.put(key, b"stray", content_type="image/webp")
    missing = [lost_variant, *await _keys(pool, gone)]

    async def run(*args: str) -> Run:
        done = await _with_a_processor(pool, store, runner, "reconcile", *args, dsn=database_url)
        assert done.code == 0, done.err
        return done

    dry = (await run("--dry-run", "--json")).json()
    result = dry["result"]
    assert (dry["state"], result["dry_run"], result["versioning"]) == ("done", True, "Enabled")
    assert (result["orphans"]["count"], result["orphans_removed"]["count"]) == (2, 0)
    assert sorted(result["orphans"]["examples"]) == sorted(strays)
    assert result["originals_restored"]["examples"] == [missing[1]]
    assert sorted(result["variants_rebuilt"]["examples"]) == sorted([lost_variant, *missing[2:]])
    dry_text = (await run("--dry-run", "--remove-orphans")).out
    assert "2 orphans no record needs, older than 1 h (2 would be removed)" in dry_text, dry_text
    assert "1 originals would be brought back from an earlier version" in dry_text
    assert dry_text.rstrip().endswith("Nothing was changed.")
    assert await _present(store, strays + missing) == [True, True] + [False] * len(missing), (
        "a dry run changes nothing"
    )

    report_only = await run()
    assert "reconcile bucket [" in report_only.err, "the progress bar, on stderr"
    assert "2 orphans no record needs, older than 1 h (kept: " in report_only.out
    assert "1 originals brought back from an earlier version" in report_only.out
    assert all(await _present(store, strays)), "orphans are only reported"
    assert all(await _present(store, needed)), "the lost original and variants are back"

    removed = (await run("--remove-orphans", "--json")).json()["result"]
    assert (removed["orphans"]["count"], removed["orphans_removed"]["count"]) == (2, 2)
    assert (removed["originals_restored"]["count"], removed["variants_rebuilt"]["count"]) == (0, 0)
    assert not any(await _present(store, strays))
    assert all(await _present(store, needed)), "nothing a record needs was removed"
    assert await _unserved(pool, store) == {}

    audited = await pool.fetch(
        "SELECT principal, action, details FROM audit_events"
        " WHERE action LIKE 'bucket.%' ORDER BY id"
    )
    actions = [(r["action"], r["principal"].split(":")[0]) for r in audited]
    assert actions == [
        ("bucket.reconcile_requested", "cli"),
        ("bucket.reconcile_requested", "cli"),
        ("bucket.reconcile_requested", "cli"),
        ("bucket.reconcile", "system"),
        ("bucket.reconcile_requested", "cli"),
        ("bucket.reconcile", "system"),
    ], "every request, and every run that could change things"


async def test_a_queued_reconcile_is_reused_and_one_with_other_options_refused(
    pool: asyncpg.Pool, database_url: str
) -> None:
    first = await admin("reconcile", "--no-wait", database_url=database_url)
    same = await admin("reconcile", "--no-wait", "--json", database_url=database_url)
    assert first.code == same.code == 0, first.err + same.err
    assert "Reconcile of the bucket (no flags) queued as job" in first.out
    job: dict[str, Any] = same.json()
    assert (job["reused"], job["state"], job["kind"]) == (True, "queued", "reconcile")
    other = await admin("reconcile", "--remove-orphans", "--no-wait", database_url=database_url)
    assert other.code == 1
    assert f"Reconcile job {job['id']} is queued with other options (no flags)" in one_line(other)
    assert await pool.fetchval("SELECT count(*) FROM admin_jobs") == 1
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM audit_events WHERE action = 'bucket.reconcile_requested'"
        )
        == 2
    ), "the refused request changed nothing"
