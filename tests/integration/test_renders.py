"""Renders after ingest against real Postgres, the local S3 and the isolated job runner: a
lazy preset is rendered once however often and by however many renderers it is asked for;
an original that no longer passes drops its ask; content moves to a profile version once it
has every at-ingest preset of it; every image on the content hears of each change."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from imagery.common.db.images import PostgresImageRepository
from imagery.common.db.projects import CHANNEL
from imagery.common.presets import Preset
from imagery.common.storage_keys import GLOBAL_SCOPE, original_key
from imagery.processor.adapters.isolation import IsolatedRunner, JobLimits
from imagery.processor.adapters.renders import PostgresRenderRequests
from imagery.processor.adapters.s3 import S3ObjectStore
from imagery.processor.use_cases.render_variant import RenderOutcome, RenderVariant
from tests import images
from tests.jobs import sleep_then_return
from tests.render_stack import (
    CountingJobs,
    address,
    ask_lazily,
    new_profile,
    project,
    render_variant,
    renderer,
    upload,
    variant_rows,
)

pytestmark = pytest.mark.integration
TEAM = "render-team"
SMALL, LARGE = Preset("small", 64, 64), Preset("large", 200, 200, lazy=True)


async def test_renders_run_in_job_slots_of_their_own_beside_the_uploads() -> None:
    uploads = IsolatedRunner(1, JobLimits(wall_seconds=10))
    renders = uploads.lane(1)
    try:
        busy = asyncio.create_task(uploads.run(sleep_then_return, 1.5, 1))
        await asyncio.sleep(0.2)  # the uploads' one slot is taken
        lane = await asyncio.wait_for(renders.run(sleep_then_return, 0, 2), timeout=1)
        assert lane.value == 2 and not busy.done(), "the render did not wait for the slot"
        assert uploads._host is renders._host, "one job host for both"
        assert (await busy).value == 1
    finally:
        renders.close()
        uploads.close()


async def _asks(pool: asyncpg.Pool) -> int:
    count: int = await pool.fetchval("SELECT count(*) FROM render_requests")
    return count


async def test_a_lazy_preset_is_rendered_once_however_it_is_asked_for(
    pool: asyncpg.Pool, store: S3ObjectStore, runner: IsolatedRunner
) -> None:
    await project(pool, TEAM, [SMALL, LARGE])
    image_id = await upload(pool, store, runner, TEAM, images.jpeg(300, 200))
    sha = await address(pool, image_id)
    assert await variant_rows(pool, sha) == {(1, "small", "webp"), (1, "small", "jpeg")}, (
        "a lazy preset is not rendered at ingest"
    )
    for _ in range(2):  # two URL requests before the render: one ask
        await ask_lazily(pool, image_id, "large")
    assert await _asks(pool) == 1

    jobs = CountingJobs(runner)
    first, second = render_variant(pool, store, jobs), render_variant(pool, store, jobs)
    requests = PostgresRenderRequests(pool)

    async def a_renderer(render: RenderVariant) -> RenderOutcome | None:
        claimed = await requests.claim(stale_after_seconds=300)
        return None if claimed is None else await render(claimed)

    outcomes = await asyncio.gather(a_renderer(first), a_renderer(second))
    assert sorted(outcomes, key=str) == sorted([RenderOutcome.RENDERED, None], key=str)
    assert jobs.calls == 1
    assert await variant_rows(pool, sha) >= {(1, "large", "webp"), (1, "large", "jpeg")}
    made = await store.head(f"variants/{sha}/v1/large.webp")
    assert made is not None and made.content_type == "image/webp"
    head = await store._client.head_object(Bucket=store.bucket, Key=f"variants/{sha}/v1/large.webp")
    assert head["CacheControl"] == "public, max-age=31536000, immutable"
    assert await _asks(pool) == 0

    # A delivery replica whose cache had not heard yet asks again: dropped, not rendered.
    await ask_lazily(pool, image_id, "large")
    claimed = await requests.claim(stale_after_seconds=300)
    assert claimed is not None and await first(claimed) is RenderOutcome.EXISTS
    assert jobs.calls == 1 and await _asks(pool) == 0
    record = await PostgresImageRepository(pool).find_by_id(TEAM, image_id)
    assert record is not None and {v.name for v in record.variants} == {"small", "large"}


async def test_an_older_versions_ask_is_moved_to_the_current_one_never_rendered_twice(
    pool: asyncpg.Pool, store: S3ObjectStore, runner: IsolatedRunner
) -> None:
    """An ask made under version 1 is claimed after version 2 came: it becomes version 2's
    ask (one row with a fresh ask for version 2), so two renderers can never both render
    version 2 from two rows."""
    await project(pool, TEAM, [SMALL, LARGE])
    image_id = await upload(pool, store, runner, TEAM, images.jpeg(300, 200))
    sha = await address(pool, image_id)
    await ask_lazily(pool, image_id, "large")  # at version 1
    await new_profile(pool, TEAM, [SMALL, LARGE])  # version 2
    await ask_lazily(pool, image_id, "large")  # at version 2, before the renderer runs
    assert await _asks(pool) == 2

    jobs = CountingJobs(runner)
    render, requests = render_variant(pool, store, jobs), PostgresRenderRequests(pool)
    outcomes = []
    while (claimed := await requests.claim(stale_after_seconds=300)) is not None:
        outcomes.append(await render(claimed))
    assert sorted(o.value for o in outcomes) == ["moved", "rendered"]
    assert jobs.calls == 1 and await _asks(pool) == 0
    assert {(v, n) for v, n, _ in await variant_rows(pool, sha)} >= {(2, "large")}
    assert (1, "large", "webp") not in await variant_rows(pool, sha)


async def test_two_renderer_loops_share_the_asks_and_render_each_once(
    pool: asyncpg.Pool, store: S3ObjectStore, runner: IsolatedRunner
) -> None:
    await project(pool, TEAM, [SMALL, LARGE, Preset("huge", 400, 400, lazy=True)])
    ids = [await upload(pool, store, runner, TEAM, images.jpeg(300 + i, 200)) for i in range(3)]
    for image_id in ids:
        for preset in ("large", "huge", "large"):
            await ask_lazily(pool, image_id, preset)
    assert await _asks(pool) == 6
    jobs = CountingJobs(runner)
    stop = asyncio.Event()
    loops = [
        asyncio.create_task(renderer(pool, store, jobs, concurrency=2).run(stop, grace_seconds=5))
        for _ in range(2)
    ]
    async with asyncio.timeout(60):
        while await _asks(pool):  # noqa: ASYNC110 - the renderers poll Postgres
            await asyncio.sleep(0.05)
    stop.set()
    await asyncio.gather(*loops)
    assert jobs.calls == 6, "each preset of each image once"
    for image_id in ids:
        rows = await variant_rows(pool, await address(pool, image_id))
        assert {(v, n) for v, n, _ in rows} == {(1, "small"), (1, "large"), (1, "huge")}


async def test_an_original_that_no_longer_passes_drops_its_ask(
    pool: asyncpg.Pool, store: S3ObjectStore, runner: IsolatedRunner
) -> None:
    await project(pool, TEAM, [SMALL, LARGE])
    image_id = await upload(pool, store, runner, TEAM, images.jpeg(300, 200))
    sha = await address(pool, image_id)
    await store.put(original_key(GLOBAL_SCOPE, sha), images.truncated_jpeg(), content_type="x/y")
    await ask_lazily(pool, image_id, "large")
    claimed = await PostgresRenderRequests(pool).claim(stale_after_seconds=300)
    assert claimed is not None
    assert await render_variant(pool, store, runner)(claimed) is RenderOutcome.REJECTED
    assert await _asks(pool) == 0
    assert {n for _, n, _ in await variant_rows(pool, sha)} == {"small"}


async def test_transient_trouble_retries_later_and_too_many_attempts_drop_the_ask(
    pool: asyncpg.Pool, store: S3ObjectStore, runner: IsolatedRunner
) -> None:
    await project(pool, TEAM, [SMALL, LARGE])
    image_id = await upload(pool, store, runner, TEAM, images.jpeg(300, 200))
    await ask_lazily(pool, image_id, "large")
    requests = PostgresRenderRequests(pool)

    class Unavailable(S3ObjectStore):
        async def get(self, key: str, *, max_bytes: int) -> bytes | None:
            raise ConnectionError("S3 is away")

    broken = Unavailable(store._client, store.bucket)
    for attempt in (1, 2):
        claimed = await requests.claim(stale_after_seconds=300)
        assert claimed is not None and claimed.attempts == attempt
        assert await render_variant(pool, broken, runner, max_attempts=2)(claimed) is (
            RenderOutcome.RETRY
        )
        assert await requests.claim(stale_after_seconds=300) is None, "not before its backoff"
        await pool.execute("UPDATE render_requests SET claimed_at = claimed_at - interval '1h'")
    claimed = await requests.claim(stale_after_seconds=300)
    assert claimed is not None
    outcome = await render_variant(pool, store, runner, max_attempts=2)(claimed)
    assert outcome is RenderOutcome.EXHAUSTED and await _asks(pool) == 0


async def test_content_moves_to_a_version_once_it_has_every_preset_and_its_images_hear(
    pool: asyncpg.Pool, database_url: str, store: S3ObjectStore, runner: IsolatedRunner
) -> None:
    await project(pool, TEAM, [SMALL])
    body = images.jpeg(300, 200)
    ids = [await upload(pool, store, runner, TEAM, body) for _ in range(2)]  # one content
    sha = await address(pool, ids[0])
    assert await address(pool, ids[1]) == sha
    v2 = await new_profile(pool, TEAM, [Preset("small", 64, 64, quality=60), Preset("mid", 99, 99)])
    for preset in ("small", "mid", "gone"):
        await pool.execute(
            "INSERT INTO render_requests (sha256, profile_version, preset, project_id, source)"
            " VALUES ($1, $2, $3, $4, 'backfill')",
            sha,
            1 if preset == "small" else v2.version,  # an ask made before the change
            preset,
            TEAM,
        )
    heard: list[str] = []
    listener = await asyncpg.connect(database_url)
    await listener.add_listener(CHANNEL, lambda *args: heard.append(args[-1]))
    try:
        render, requests = render_variant(pool, store, runner), PostgresRenderRequests(pool)
        outcomes = []
        while (claimed := await requests.claim(stale_after_seconds=300)) is not None:
            outcomes.append((claimed.preset, await render(claimed)))
            if claimed.preset == "small":
                version = await pool.fetchval(
                    "SELECT profile_version FROM image_blobs WHERE sha256 = $1", sha
                )
                assert version == 1, "mid is still missing at version 2"
        await asyncio.sleep(0.2)  # notices arrive after the commit
    finally:
        await listener.close()
    assert dict(outcomes) == {
        "small": RenderOutcome.RENDERED,  # the current version's small, in its place
        "mid": RenderOutcome.RENDERED,
        "gone": RenderOutcome.DROPPED,  # not a preset of the profile
    }
    blob_version = await pool.fetchval(
        "SELECT profile_version FROM image_blobs WHERE sha256 = $1", sha
    )
    assert blob_version == v2.version == 2
    assert (2, "small", "jpeg") in await variant_rows(pool, sha)
    assert (1, "small", "jpeg") in await variant_rows(pool, sha), "older versions stay"
    assert await store.head(f"variants/{sha}/v2/mid.webp") is not None
    assert sorted(set(heard)) == sorted(f"image:{i}" for i in ids)
    assert len(heard) == 4, "both images, after each of the two renders"
