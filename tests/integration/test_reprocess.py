"""Failed uploads can be tried again: an upload that failed for a reason that may not be the
file's fault keeps its bytes under `retained/`, `imagery-admin reprocess` (the installed
command, in a subprocess) runs it again under the same id, and the reconciler keeps those
bytes while they are within their days. Real Postgres, the local S3 and the isolated job
runner."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from imagery.common.aws.clients import s3_client
from imagery.common.config import AwsSettings
from imagery.common.db.images import PostgresImageRepository
from imagery.common.domain import ImageRecord, ImageStatus
from imagery.common.ids import new_image_id
from imagery.common.storage_keys import GLOBAL_SCOPE, retained_key, upload_key
from imagery.processor.adapters.admin_jobs import PostgresAdminJobs
from imagery.processor.adapters.isolation import IsolatedRunner, JobLimits
from imagery.processor.adapters.postgres import PostgresContentInventory, PostgresOutcomes
from imagery.processor.adapters.s3 import S3ObjectStore
from imagery.processor.imaging import Limits, RenderSpec
from imagery.processor.ports import ImageJobs
from imagery.processor.use_cases.process_upload import Outcome, UploadProcessor
from imagery.processor.use_cases.reconcile import Reconciler
from imagery.processor.use_cases.run_admin_jobs import RunAdminJobs
from tests import images
from tests.fakes import InlineJobs
from tests.integration.test_admin_cli import USER, Run, admin, one_line
from tests.render_stack import DEFAULT_PRESETS

pytestmark = pytest.mark.integration
SPEC = RenderSpec(presets=DEFAULT_PRESETS)
# Frames that each decode onto a 4000x4000 canvas: far more than the tight runner's wall-clock
# limit, well within the normal one.
BIG = images.sparse_gif(10)


@pytest.fixture(scope="module")
def tight() -> Iterator[IsolatedRunner]:
    """A runner whose limit no real photo fits in: every job ends PROCESSING_TIMEOUT."""
    runner = IsolatedRunner(1, JobLimits(memory_bytes=512 * 1024**2, wall_seconds=0.05))
    yield runner  # not warmed up: warming up is a job too, and it would not fit
    runner.close()


@pytest.fixture(scope="module")
def normal() -> Iterator[IsolatedRunner]:
    runner = IsolatedRunner(1, JobLimits(memory_bytes=1024**3, cpu_seconds=30))
    runner.warm_up()
    yield runner
    runner.close()


def _processor(pool: asyncpg.Pool, store: S3ObjectStore, jobs: ImageJobs) -> UploadProcessor:
    return UploadProcessor(
        PostgresImageRepository(pool),
        PostgresOutcomes(pool),
        store,
        jobs,
        limits=Limits(),
        max_upload_bytes=10 * 1024**2,
        claim_stale_seconds=300,
        spec=SPEC,
        retained_days=7,
    )


async def _uploaded(
    pool: asyncpg.Pool, store: S3ObjectStore, jobs: ImageJobs, body: bytes
) -> tuple[str, Outcome, str | None]:
    """An upload through the real processing path: its id, outcome and failure reason."""
    image_id = new_image_id()
    key = upload_key(GLOBAL_SCOPE, image_id)
    content_type = "image/gif" if body.startswith(b"GIF") else "image/jpeg"
    await PostgresImageRepository(pool).save(
        principal="key:test",
        record=ImageRecord(image_id, ImageStatus.PENDING, content_type, "a", key),
    )
    await store.put(key, body, content_type=content_type)
    result = await _processor(pool, store, jobs)(image_id, key)
    return image_id, result.outcome, result.reason


async def _state(pool: asyncpg.Pool, image_id: str) -> tuple[str, str | None]:
    row = await pool.fetchrow(
        "SELECT status, failure_reason FROM image_records WHERE id = $1", image_id
    )
    assert row is not None
    return row["status"], row["failure_reason"]


async def _with_a_processor(pool: asyncpg.Pool, store: S3ObjectStore, *args: str, dsn: str) -> Run:
    """Run the command while a processor runs operator jobs."""
    stop = asyncio.Event()

    async def a_processor() -> None:
        while not stop.is_set():
            await RunAdminJobs(PostgresAdminJobs(pool), store)()
            await asyncio.sleep(0.05)

    processor = asyncio.create_task(a_processor())
    try:
        return await admin(*args, database_url=dsn)
    finally:
        stop.set()
        await processor


def _reconciler(pool: asyncpg.Pool, store: S3ObjectStore, now: datetime) -> Reconciler:
    return Reconciler(
        store,
        PostgresContentInventory(pool),
        store,
        InlineJobs(),  # never used: nothing here renders
        grace_seconds=3600,
        limits=Limits(),
        spec=SPEC,
        max_original_bytes=10 * 1024**2,
        retained_days=7,
        clock=lambda: now,
    )


async def test_a_timeout_keeps_the_upload_under_retained_and_a_corrupt_one_keeps_nothing(
    pool: asyncpg.Pool, store: S3ObjectStore, tight: IsolatedRunner, normal: IsolatedRunner
) -> None:
    slow, outcome, reason = await _uploaded(pool, store, tight, BIG)
    assert (outcome, reason) == (Outcome.FAILED, "PROCESSING_TIMEOUT")
    assert await store.get(retained_key(GLOBAL_SCOPE, slow), max_bytes=len(BIG)) == BIG
    assert await store.head(upload_key(GLOBAL_SCOPE, slow)) is None, "the upload is gone"
    until = await pool.fetchval("SELECT retained_until FROM image_records WHERE id = $1", slow)
    assert timedelta(days=6) < until - datetime.now(UTC) <= timedelta(days=7)

    broken, outcome, reason = await _uploaded(pool, store, normal, images.truncated_jpeg())
    assert (outcome, reason) == (Outcome.FAILED, "CORRUPT")
    assert await store.head(retained_key(GLOBAL_SCOPE, broken)) is None
    assert await store.head(upload_key(GLOBAL_SCOPE, broken)) is None


async def test_reprocess_turns_a_retained_failed_image_ready_under_the_same_id_audited(
    pool: asyncpg.Pool,
    database_url: str,
    store: S3ObjectStore,
    tight: IsolatedRunner,
    normal: IsolatedRunner,
) -> None:
    image_id, outcome, _ = await _uploaded(pool, store, tight, BIG)
    assert outcome is Outcome.FAILED

    dry = await admin("reprocess", image_id, "--dry-run", "--json", database_url=database_url)
    assert dry.code == 0, dry.err
    assert [i["image_id"] for i in dry.json()["images"]] == [image_id]
    assert await _state(pool, image_id) == ("failed", "PROCESSING_TIMEOUT"), "a dry run"

    run = await _with_a_processor(pool, store, "reprocess", image_id, "--json", dsn=database_url)
    assert run.code == 0, run.err
    (done,) = run.json()["images"]
    assert (done["image_id"], done["job_state"]) == (image_id, "done")
    assert await _state(pool, image_id) == ("pending", None)
    # The copy's S3 event reaches the processor, which now has room enough.
    key = upload_key(GLOBAL_SCOPE, image_id)
    assert await store.get(key, max_bytes=len(BIG)) == BIG
    assert (await _processor(pool, store, normal)(image_id, key)).outcome is Outcome.READY
    assert await _state(pool, image_id) == ("ready", None)

    event = await pool.fetchrow(
        "SELECT principal, target, details FROM audit_events WHERE action = 'image.reprocess'"
        " ORDER BY id DESC LIMIT 1"
    )
    assert event is not None
    assert (event["principal"], event["target"]) == (USER, f"images/{image_id}")
    assert json.loads(event["details"])["previous_reason"] == "PROCESSING_TIMEOUT"

    # Ended READY: its retained copy is no longer needed, and the reconciler removes it.
    later = datetime.now(UTC) + timedelta(hours=2)
    report = await _reconciler(pool, store, later).run()
    assert retained_key(GLOBAL_SCOPE, image_id) in report.orphans_deleted
    assert await store.head(retained_key(GLOBAL_SCOPE, image_id)) is None


async def test_reprocess_of_a_whole_project_takes_only_its_retained_failures(
    pool: asyncpg.Pool,
    database_url: str,
    store: S3ObjectStore,
    tight: IsolatedRunner,
    normal: IsolatedRunner,
) -> None:
    retained, _, _ = await _uploaded(pool, store, tight, BIG)
    corrupt, _, _ = await _uploaded(pool, store, normal, images.truncated_jpeg())
    dry = await admin(
        "reprocess", "--project", "default", "--all-retained", "--dry-run", "--json",
        database_url=database_url,
    )  # fmt: skip
    assert dry.code == 0, dry.err
    chosen = {i["image_id"] for i in dry.json()["images"]}
    assert retained in chosen and corrupt not in chosen


async def test_reprocess_refuses_in_one_sentence_and_changes_nothing(
    pool: asyncpg.Pool,
    database_url: str,
    store: S3ObjectStore,
    tight: IsolatedRunner,
    normal: IsolatedRunner,
) -> None:
    ready, _, _ = await _uploaded(pool, store, normal, images.jpeg())
    corrupt, _, _ = await _uploaded(pool, store, normal, images.truncated_jpeg())
    expired, _, _ = await _uploaded(pool, store, tight, BIG)
    await pool.execute(
        "UPDATE image_records SET retained_until = now() - interval '1 day' WHERE id = $1",
        expired,
    )
    audited = await pool.fetchval("SELECT count(*) FROM audit_events")
    cases = {
        ready: "is READY, not FAILED",
        corrupt: "failed with CORRUPT, a fault of the file itself",
        expired: "expired at",
        new_image_id(): "No image",
    }
    for image_id, says in cases.items():
        run = await admin("reprocess", image_id, database_url=database_url)
        assert run.code == 1, run
        assert says in one_line(run)
    # One image it cannot take refuses the whole command.
    both = await admin("reprocess", expired, ready, database_url=database_url)
    assert both.code == 1
    assert await _state(pool, expired) == ("failed", "PROCESSING_TIMEOUT")
    assert await pool.fetchval("SELECT count(*) FROM audit_events") == audited
    assert await pool.fetchval("SELECT count(*) FROM admin_jobs WHERE kind = 'reprocess'") == 0
    usage = await admin("reprocess", database_url=database_url)
    assert usage.code == 2

    # A deleted project waits for its purge: nothing of it comes back to life.
    kept, _, _ = await _uploaded(pool, store, tight, BIG)
    await pool.execute(
        "UPDATE projects SET deleted_at = now(), purge_time = now() + interval '7 days'"
        " WHERE id = 'default'"
    )
    one = await admin("reprocess", kept, database_url=database_url)
    assert one.code == 1 and "which is deleted and waits for its purge" in one_line(one)
    whole = await admin(
        "reprocess", "--project", "default", "--all-retained", database_url=database_url
    )
    assert whole.code == 1 and "is deleted and waits for its purge" in one_line(whole)
    assert await _state(pool, kept) == ("failed", "PROCESSING_TIMEOUT")
    assert await pool.fetchval("SELECT count(*) FROM admin_jobs WHERE kind = 'reprocess'") == 0


async def test_a_reprocess_whose_retained_bytes_are_gone_ends_failed_and_says_so(
    pool: asyncpg.Pool, database_url: str, store: S3ObjectStore, tight: IsolatedRunner
) -> None:
    image_id, _, _ = await _uploaded(pool, store, tight, BIG)
    await store.delete(retained_key(GLOBAL_SCOPE, image_id))  # by hand, before it expired
    run = await _with_a_processor(pool, store, "reprocess", image_id, dsn=database_url)
    assert run.code == 1
    assert "are gone" in run.err.strip().splitlines()[-1]
    assert await _state(pool, image_id) == ("failed", "NOT_UPLOADED")


async def test_the_reconciler_keeps_retained_uploads_within_their_days(
    pool: asyncpg.Pool, store: S3ObjectStore, tight: IsolatedRunner
) -> None:
    kept, _, _ = await _uploaded(pool, store, tight, BIG)
    stray = new_image_id()  # no record: nothing will ever reprocess it
    await store.put(retained_key(GLOBAL_SCOPE, stray), b"x", content_type="image/jpeg")

    soon = datetime.now(UTC) + timedelta(hours=2)  # past the grace, within the days
    report = await _reconciler(pool, store, soon).run()
    assert retained_key(GLOBAL_SCOPE, kept) not in report.orphans_deleted
    assert retained_key(GLOBAL_SCOPE, stray) in report.orphans_deleted
    assert await store.head(retained_key(GLOBAL_SCOPE, kept)) is not None

    past = datetime.now(UTC) + timedelta(days=8)
    dry = await _reconciler(pool, store, past).run(dry_run=True)
    assert retained_key(GLOBAL_SCOPE, kept) in dry.orphans_deleted
    assert await store.head(retained_key(GLOBAL_SCOPE, kept)) is not None, "a dry run"


async def test_the_local_bucket_expires_retained_uploads_after_their_days(
    aws_settings: AwsSettings,
) -> None:
    async with s3_client(aws_settings) as client:
        rules = (await client.get_bucket_lifecycle_configuration(Bucket=aws_settings.bucket))[
            "Rules"
        ]
    days = {r["Filter"]["Prefix"]: r["Expiration"]["Days"] for r in rules}
    assert days == {"uploads/": 1, "retained/": 7}


async def test_the_sweep_leaves_a_reprocess_alone_until_its_copy_is_made(
    pool: asyncpg.Pool, database_url: str, store: S3ObjectStore, tight: IsolatedRunner
) -> None:
    image_id, _, _ = await _uploaded(pool, store, tight, BIG)
    queued = await admin("reprocess", image_id, "--no-wait", database_url=database_url)
    assert queued.code == 0, queued.err
    repo = PostgresImageRepository(pool)
    assert await repo.claim_unfinished(idle_seconds=0, lease_seconds=0) == [], (
        "pending, but its bytes are still to be copied back: not an abandoned upload"
    )
    await RunAdminJobs(PostgresAdminJobs(pool), store)()
    (swept,) = await repo.claim_unfinished(idle_seconds=0, lease_seconds=0)
    assert (swept.id, swept.status) == (image_id, ImageStatus.PENDING)
