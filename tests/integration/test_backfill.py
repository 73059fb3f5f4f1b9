"""Backfill against real Postgres, the local S3 and the isolated job runner: a profile change
followed by a backfill brings every image of the project to the new version with no gap in
what it serves, paced, and a backfill stopped midway goes on from where it was."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import asyncpg
import pytest

from imagery.common.db.backfill import backfill_plan
from imagery.common.db.images import PostgresImageRepository
from imagery.common.presets import Preset
from imagery.processor.adapters.admin_jobs import PostgresAdminJobs
from imagery.processor.adapters.backfills import PostgresBackfills
from imagery.processor.adapters.isolation import IsolatedRunner
from imagery.processor.adapters.s3 import S3ObjectStore
from imagery.processor.imaging import RenderSpec
from imagery.processor.ports import AdminJob
from imagery.processor.render_ports import BackfillBatch
from imagery.processor.use_cases.backfill import Backfill
from imagery.processor.use_cases.run_admin_jobs import RunAdminJobs
from tests import images
from tests.render_stack import (
    DEFAULT_PRESETS,
    CountingJobs,
    address,
    new_profile,
    project,
    renderer,
    upload,
    variant_rows,
)

pytestmark = pytest.mark.integration
TEAM = "backfill-team"
V1 = [Preset("small", 64, 64, quality=70), Preset("card", 80, 60, crop=True)]


class Walk(PostgresBackfills):
    """The real adapter, noting where each batch started."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self.starts: list[str] = []

    async def enqueue(
        self, job: AdminJob, *, version: int, after: str, limit: int, presets: Sequence[Preset]
    ) -> BackfillBatch | None:
        self.starts.append(after)
        return await super().enqueue(
            job, version=version, after=after, limit=limit, presets=presets
        )


def _jobs(
    pool: asyncpg.Pool,
    store: S3ObjectStore,
    backfills: PostgresBackfills,
    *,
    per_minute: int,
    batch: int,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    default_presets: Sequence[Preset] = DEFAULT_PRESETS,
) -> RunAdminJobs:
    """The processor's operator jobs, as bootstrap wires them."""
    jobs = PostgresAdminJobs(pool)
    backfill = Backfill(
        backfills,
        jobs,
        default_presets,
        per_minute=per_minute,
        batch=batch,
        poll_seconds=0.05,
        sleep=sleep,
    )
    return RunAdminJobs(jobs, store, backfill=backfill)


async def _queue(pool: asyncpg.Pool) -> None:
    await pool.execute(
        "INSERT INTO admin_jobs (kind, target, requested_by) VALUES ('backfill', $1, 'cli:t')",
        TEAM,
    )


async def _job(pool: asyncpg.Pool) -> asyncpg.Record:
    row = await pool.fetchrow(
        "SELECT state, total, done_count, version, made, failed, moved, resume_after"
        " FROM admin_jobs WHERE kind = 'backfill'"
    )
    assert row is not None
    return row


async def test_a_profile_change_and_a_backfill_bring_every_image_to_the_new_version(
    pool: asyncpg.Pool, store: S3ObjectStore, runner: IsolatedRunner
) -> None:
    await project(pool, TEAM)  # the default profile: version 0
    bodies = [images.jpeg(200 + i, 150) for i in range(3)]
    ids = [await upload(pool, store, runner, TEAM, body) for body in [*bodies, bodies[0]]]
    shas = {await address(pool, i) for i in ids}
    assert len(shas) == 3, "four images, three contents"
    await new_profile(pool, TEAM, V1)
    repo = PostgresImageRepository(pool)
    before = await repo.find_by_id(TEAM, ids[0])
    assert before is not None and {v.key for v in before.variants if v.name == "small"} == {
        f"variants/{await address(pool, ids[0])}/small.{ext}" for ext in ("webp", "jpg")
    }, "version 0 serves until its replacement exists"

    jobs = CountingJobs(runner)
    stop = asyncio.Event()
    rendering = asyncio.create_task(renderer(pool, store, jobs).run(stop, grace_seconds=5))
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await asyncio.sleep(0.01)

    await _queue(pool)
    async with asyncio.timeout(60):
        backfill = _jobs(pool, store, PostgresBackfills(pool), per_minute=120, batch=1, sleep=sleep)
        assert await backfill() == 1
    stop.set()
    await rendering

    job = await _job(pool)
    assert (job["state"], job["version"], job["total"], job["done_count"]) == ("done", 1, 3, 3)
    assert (job["made"], job["failed"], job["moved"]) == (6, 0, 3)
    assert jobs.calls == 6, "two presets of three contents, each once"
    for sha in shas:
        version = await pool.fetchval(
            "SELECT profile_version FROM image_blobs WHERE sha256 = $1", sha
        )
        rows = await variant_rows(pool, sha)
        assert version == 1
        assert {(1, "small"), (1, "card"), (0, "thumb"), (0, "small")} == {
            (v, n) for v, n, _ in rows
        }, "the new version beside the old, which is not deleted"
    after = await repo.find_by_id(TEAM, ids[3])
    assert after is not None
    assert {v.key.split("/", 2)[2] for v in after.variants} == {
        "v1/small.webp",
        "v1/small.jpg",
        "v1/card.webp",
        "v1/card.jpg",
        "thumb.webp",
        "thumb.jpg",
    }, "each name and format from the newest version that has it"
    assert slept[:3] == [1.0, 1.0, 1.0], "two asks a content at 120 a minute: a second each"


async def test_a_backfill_stopped_midway_goes_on_from_where_it_was(
    pool: asyncpg.Pool, store: S3ObjectStore, runner: IsolatedRunner
) -> None:
    await project(pool, TEAM)
    for i in range(5):
        await upload(pool, store, runner, TEAM, images.jpeg(100 + i, 90))
    await new_profile(pool, TEAM, V1)
    await _queue(pool)

    class ProcessorDied(Exception):
        pass

    async def die(_: float) -> None:
        raise ProcessorDied

    walk = Walk(pool)
    with pytest.raises(ProcessorDied):
        await _jobs(pool, store, walk, per_minute=600, batch=2, sleep=die)()
    stopped = await _job(pool)
    assert stopped["state"] == "running" and stopped["resume_after"] != ""
    asked = await pool.fetchval("SELECT count(*) FROM render_requests")
    assert asked == 4, "the first batch: two contents, two presets each"

    await pool.execute("UPDATE admin_jobs SET heartbeat_at = now() - interval '1 hour'")
    jobs = CountingJobs(runner)
    stop = asyncio.Event()
    rendering = asyncio.create_task(renderer(pool, store, jobs).run(stop, grace_seconds=5))
    walk.starts.clear()
    async with asyncio.timeout(60):
        taken_over = _jobs(pool, store, walk, per_minute=60_000, batch=2)
        assert await taken_over() == 1
    stop.set()
    await rendering
    assert walk.starts[0] == stopped["resume_after"], "resumed after the last content it asked"
    done = await _job(pool)
    assert (done["state"], done["done_count"], done["total"]) == ("done", 5, 5)
    assert (done["made"], done["failed"]) == (10, 0)
    assert jobs.calls == 10, "nothing asked or rendered twice"
    at_v1 = await pool.fetchval("SELECT count(*) FROM image_blobs WHERE profile_version = 1")
    assert at_v1 == 5


async def test_a_preset_added_to_the_deployments_defaults_is_backfilled_at_version_0(
    pool: asyncpg.Pool, store: S3ObjectStore, runner: IsolatedRunner
) -> None:
    """The default profile (version 0, VARIANT_PRESETS) gains a preset: the project's images
    are at version 0 already, and the backfill renders only what is missing."""
    await project(pool, TEAM)
    ids = [await upload(pool, store, runner, TEAM, images.jpeg(120 + i, 90)) for i in range(2)]
    grown = (*DEFAULT_PRESETS, Preset("square", 40, 40, crop=True))
    plan = await backfill_plan(pool, TEAM, 0, [p.name for p in grown if not p.lazy])
    assert (plan.contents, plan.renders, plan.total, plan.done) == (2, 2, 2, 0)

    jobs = CountingJobs(runner)
    stop = asyncio.Event()
    spec = RenderSpec(presets=grown)
    rendering = asyncio.create_task(
        renderer(pool, store, jobs, spec=spec).run(stop, grace_seconds=5)
    )
    await _queue(pool)
    async with asyncio.timeout(60):
        backfill = _jobs(
            pool, store, PostgresBackfills(pool), per_minute=6000, batch=10, default_presets=grown
        )
        assert await backfill() == 1
    stop.set()
    await rendering
    job = await _job(pool)
    assert (job["state"], job["version"], job["total"], job["done_count"]) == ("done", 0, 2, 2)
    assert (job["made"], job["failed"]) == (2, 0)
    assert jobs.calls == 2, "only the new preset, once per content"
    record = await PostgresImageRepository(pool).find_by_id(TEAM, ids[0])
    assert record is not None
    square = {
        v.key.split("/", 2)[2]: (v.width, v.height) for v in record.variants if v.name == "square"
    }
    assert square == {"square.webp": (40, 40), "square.jpg": (40, 40)}, (
        "served, at version 0's keys"
    )
    again = await backfill_plan(pool, TEAM, 0, [p.name for p in grown if not p.lazy])
    assert (again.contents, again.done) == (0, 2)


async def test_a_content_collected_under_a_batch_only_makes_the_batch_read_again(
    pool: asyncpg.Pool, store: S3ObjectStore, runner: IsolatedRunner
) -> None:
    """The race where a batch's content goes (its last image deleted, the content collected)
    between the batch's read and its asks: the asks' insert fails on the foreign key, and the
    batch is read again instead of the job stalling until its heartbeat is stale. A trigger
    makes the race happen once: it deletes a content in the asks' own transaction (a
    sequence, which no rollback resets, keeps it to once)."""
    await project(pool, TEAM)
    for i in range(2):
        await upload(pool, store, runner, TEAM, images.jpeg(140 + i, 90))
    await new_profile(pool, TEAM, V1)
    await pool.execute(
        """CREATE SEQUENCE race_once;
           CREATE FUNCTION collect_one() RETURNS trigger LANGUAGE plpgsql AS $$
           DECLARE gone text;
           BEGIN
             IF nextval('race_once') = 1 THEN
               SELECT min(sha256) INTO gone FROM image_records;
               DELETE FROM image_records WHERE sha256 = gone;
               DELETE FROM image_blobs WHERE sha256 = gone;
             END IF;
             RETURN NULL;
           END $$;
           CREATE TRIGGER collect_one BEFORE INSERT ON render_requests
               FOR EACH STATEMENT EXECUTE FUNCTION collect_one();"""
    )
    await _queue(pool)
    jobs = CountingJobs(runner)
    stop = asyncio.Event()
    rendering = asyncio.create_task(renderer(pool, store, jobs).run(stop, grace_seconds=5))
    async with asyncio.timeout(60):
        assert await _jobs(pool, store, PostgresBackfills(pool), per_minute=6000, batch=10)() == 1
    stop.set()
    await rendering
    assert await pool.fetchval("SELECT nextval('race_once')") == 3, "one retry"
    job = await _job(pool)
    assert (job["state"], job["total"], job["done_count"], job["made"]) == ("done", 2, 2, 4)
