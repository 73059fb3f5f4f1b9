"""Retention on a real Postgres: the housekeeping sweep prunes what each table keeps past its
days and nothing newer, never a FAILED record whose bytes are still retained nor a job that
render asks still name, batch by batch; and the `imagery.table.rows` gauge reports the
tables' sizes, from the leading processor only."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import pytest
from opentelemetry.metrics import Meter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint

from imagery.common.ids import new_image_id
from imagery.common.storage_keys import GLOBAL_SCOPE, upload_key
from imagery.processor.adapters.retention import PostgresRetention
from imagery.processor.ports import RetentionRule
from imagery.processor.use_cases.prune_retained import PruneRetained

pytestmark = pytest.mark.integration
RULES = [
    RetentionRule("audit_events", 400),
    RetentionRule("image_deletions", 1),
    RetentionRule("failed_images", 30),
    RetentionRule("admin_jobs", 90),
]
SHA = "a" * 64


@dataclass
class Metrics:
    reader: InMemoryMetricReader
    meter: Meter

    def rows(self) -> dict[str, int]:
        data = self.reader.get_metrics_data()
        if data is None:
            return {}
        return {
            str(point.attributes["table"]): int(point.value)
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            for metric in sm.metrics
            if metric.name == "imagery.table.rows"
            for point in metric.data.data_points
            if isinstance(point, NumberDataPoint) and point.attributes
        }


@pytest.fixture
def metrics() -> Iterator[Metrics]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    yield Metrics(reader, provider.get_meter("test"))
    provider.shutdown()


async def _audit(pool: asyncpg.Pool, days_ago: float) -> int:
    event_id: int = await pool.fetchval(
        """INSERT INTO audit_events (at, project_id, principal, action, target, outcome)
           VALUES (now() - make_interval(secs => $1::float8 * 86400), 'default', 'key:test',
                   'image.create', 'images/x', 'ok')
           RETURNING id""",
        days_ago,
    )
    return event_id


async def _deletion(pool: asyncpg.Pool, days_ago: float) -> str:
    image_id = new_image_id()
    await pool.execute(
        "INSERT INTO image_deletions (image_id, deleted_at)"
        " VALUES ($1, now() - make_interval(secs => $2::float8 * 86400))",
        image_id,
        days_ago,
    )
    return image_id


async def _image(
    pool: asyncpg.Pool,
    status: str,
    days_ago: float,
    *,
    reason: str | None = None,
    retained_for_days: float | None = None,
) -> str:
    """A record that last changed `days_ago`; FAILED ones fail with `reason` (NOT_UPLOADED by
    default), and keep their bytes for `retained_for_days` more days (negative: expired)."""
    image_id = new_image_id()
    if status == "failed":
        reason = reason or "NOT_UPLOADED"
    await pool.execute(
        """INSERT INTO image_records (id, status, content_type, file_name, object_key,
                                      failure_reason, created_at, updated_at, retained_until)
           VALUES ($1, $2, 'image/png', 'a.png', $3, $4,
                   now() - make_interval(secs => $5::float8 * 86400),
                   now() - make_interval(secs => $5::float8 * 86400),
                   now() + make_interval(secs => $6::float8 * 86400))""",
        image_id,
        status,
        upload_key(GLOBAL_SCOPE, image_id),
        reason,
        days_ago,
        retained_for_days,
    )
    return image_id


async def _job(pool: asyncpg.Pool, state: str, days_ago: float) -> int:
    """An operator job created `days_ago`, and finished then when `state` says it ended."""
    job_id: int = await pool.fetchval(
        """INSERT INTO admin_jobs (kind, target, requested_by, state, created_at, finished_at)
           SELECT 'backfill', $1, 'key:test', $2, at, CASE WHEN $2 IN ('done', 'failed')
                                                           THEN at END
             FROM (SELECT now() - make_interval(secs => $3::float8 * 86400) AS at) t
           RETURNING id""",
        f"project-{new_image_id().lower()}",
        state,
        days_ago,
    )
    return job_id


async def _ids(pool: asyncpg.Pool, sql: str) -> set[object]:
    return {row[0] for row in await pool.fetch(sql)}


async def test_each_table_loses_what_is_past_its_retention_and_keeps_the_rest(
    pool: asyncpg.Pool, metrics: Metrics
) -> None:
    old_event, new_event = await _audit(pool, 401), await _audit(pool, 399)
    old_deletion, new_deletion = await _deletion(pool, 1.1), await _deletion(pool, 0.9)
    old_failed, new_failed = await _image(pool, "failed", 31), await _image(pool, "failed", 29)
    old_others = {
        await _image(pool, "ready", 365),
        await _image(pool, "pending", 365),
        await _image(pool, "processing", 365),
    }
    old_done, old_failed_job = await _job(pool, "done", 91), await _job(pool, "failed", 91)
    new_done = await _job(pool, "done", 89)
    unfinished = {await _job(pool, "queued", 365), await _job(pool, "running", 365)}

    sweep = PruneRetained(PostgresRetention(pool), RULES, meter=metrics.meter)
    pruned = await sweep()

    assert pruned == {"audit_events": 1, "image_deletions": 1, "failed_images": 1, "admin_jobs": 2}
    assert await _ids(pool, "SELECT id FROM audit_events") == {new_event}
    assert old_event not in await _ids(pool, "SELECT id FROM audit_events")
    assert await _ids(pool, "SELECT image_id FROM image_deletions") == {new_deletion}
    assert old_deletion not in await _ids(pool, "SELECT image_id FROM image_deletions")
    images = await _ids(pool, "SELECT id FROM image_records")
    assert images == {new_failed, *old_others}, "only FAILED records go, and only old ones"
    assert old_failed not in images
    jobs = await _ids(pool, "SELECT id FROM admin_jobs")
    assert jobs == {new_done, *unfinished}, "only finished jobs go, however old the others"
    assert not {old_done, old_failed_job} & jobs
    assert await sweep() == dict.fromkeys(pruned, 0), "a second sweep finds nothing"


async def test_a_failed_record_stays_while_its_retained_bytes_are_kept(
    pool: asyncpg.Pool, metrics: Metrics
) -> None:
    kept = await _image(pool, "failed", 60, reason="CPU_LIMIT", retained_for_days=1)
    expired = await _image(pool, "failed", 60, reason="CPU_LIMIT", retained_for_days=-1)
    never_kept = await _image(pool, "failed", 60, reason="UNSUPPORTED_FORMAT")
    usage = "SELECT images, bytes, day_uploads FROM project_usage WHERE project_id = 'default'"
    before = await pool.fetchrow(usage)

    pruned = await PruneRetained(PostgresRetention(pool), RULES, meter=metrics.meter)()

    assert pruned["failed_images"] == 2
    assert await _ids(pool, "SELECT id FROM image_records") == {kept}, (
        "reprocess and the reconciler still want its bytes: the record stays with them"
    )
    assert not {expired, never_kept} & await _ids(pool, "SELECT id FROM image_records")
    assert await pool.fetchrow(usage) == before, "a FAILED record counts for nothing in usage"


async def test_a_finished_job_stays_while_render_asks_still_name_it(
    pool: asyncpg.Pool, metrics: Metrics
) -> None:
    asked, alone = await _job(pool, "done", 120), await _job(pool, "done", 120)
    await pool.execute(
        "INSERT INTO image_blobs (sha256, format, width, height, size_bytes, reference_count)"
        " VALUES ($1, 'png', 1, 1, 1, 1)",
        SHA,
    )
    await pool.execute(
        "INSERT INTO render_requests (sha256, profile_version, preset, project_id, source,"
        " job_id) VALUES ($1, 1, 'thumb', 'default', 'backfill', $2)",
        SHA,
        asked,
    )

    pruned = await PruneRetained(PostgresRetention(pool), RULES, meter=metrics.meter)()

    assert pruned["admin_jobs"] == 1
    assert await _ids(pool, "SELECT id FROM admin_jobs") == {asked}
    assert alone not in await _ids(pool, "SELECT id FROM admin_jobs")


class CountedBatches(PostgresRetention):
    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self.batches: dict[str, list[int]] = {}

    async def prune(self, table: str, *, days: int, limit: int) -> int:
        gone = await super().prune(table, days=days, limit=limit)
        self.batches.setdefault(table, []).append(gone)
        return gone


async def test_a_backlog_goes_in_batches_until_one_is_short(
    pool: asyncpg.Pool, metrics: Metrics
) -> None:
    for days in range(401, 409):
        await _audit(pool, days)
    newest_old = await _audit(pool, 400.5)
    kept = await _audit(pool, 10)
    for _ in range(7):
        await _image(pool, "failed", 45)
    retention = CountedBatches(pool)

    pruned = await PruneRetained(retention, RULES, batch=3, meter=metrics.meter)()

    assert pruned["audit_events"] == 9 and pruned["failed_images"] == 7
    assert retention.batches["audit_events"] == [3, 3, 3, 0]
    assert retention.batches["failed_images"] == [3, 3, 1]
    assert retention.batches["image_deletions"] == [0]
    assert await _ids(pool, "SELECT id FROM audit_events") == {kept}
    assert newest_old not in await _ids(pool, "SELECT id FROM audit_events")


async def test_the_gauge_reports_each_tables_rows_from_the_leader_only(
    pool: asyncpg.Pool, metrics: Metrics
) -> None:
    for days in (1, 2, 3):
        await _audit(pool, days)
    await _deletion(pool, 0.5)
    await _image(pool, "failed", 1)
    await _image(pool, "failed", 2)
    await _image(pool, "ready", 1)
    await _job(pool, "done", 1)
    leading = [True]
    sweep = PruneRetained(
        PostgresRetention(pool), RULES, leading=lambda: leading[0], meter=metrics.meter
    )
    assert metrics.rows() == {}, "nothing is reported before the first sweep"

    await sweep()
    # Never analyzed yet: the tables are counted.
    expected = {
        "audit_events": 3,
        "image_deletions": 1,
        "failed_images": 2,
        "admin_jobs": 1,
        "event_outbox": 0,
        "render_requests": 0,
    }
    assert metrics.rows() == expected

    await _audit(pool, 4)
    await _image(pool, "failed", 3)
    await pool.execute("ANALYZE")
    await sweep()
    # Analyzed: the planner's statistics (exact for tables this small).
    assert metrics.rows() == {**expected, "audit_events": 4, "failed_images": 3}

    leading[0] = False
    assert metrics.rows() == {}, "another processor holds the lease: it reports the sizes"


async def test_events_older_than_their_days_go_published_or_not(pool: asyncpg.Pool) -> None:
    insert = """
INSERT INTO event_outbox (type, project_id, image_id, sequence, payload, created_at, published_at)
VALUES ('image.ready', 'default', $1, 1, '{}', now() - make_interval(days => $2), $3)"""
    await pool.execute(insert, "old-published", 8, datetime.now(UTC))
    await pool.execute(insert, "old-waiting", 8, None)
    await pool.execute(insert, "recent-waiting", 6, None)
    sweep = PruneRetained(PostgresRetention(pool), [RetentionRule("event_outbox", 7)])
    assert (await sweep())["event_outbox"] == 2
    kept = await pool.fetch("SELECT image_id FROM event_outbox")
    assert [row["image_id"] for row in kept] == ["recent-waiting"]
