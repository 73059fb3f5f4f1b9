"""ReadyTargetCache over the in-memory repository: hits skip the reader, deletions are heard
before any answer, and nothing that raced a deletion or is not READY is kept."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence

import pytest

from imagery.common.domain import DownloadTarget, ImageRecord, ImageStatus
from imagery.delivery.adapters.target_cache import ReadyTargetCache
from tests.fakes import InMemoryImageRepository
from tests.unit.test_delivery_use_cases import _image

# Virtual loop time: sleeps, timeouts and call_later take no real time.
pytestmark = pytest.mark.looptime

FORMATS = ("webp",)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _cache(
    repo: InMemoryImageRepository, *, size: int = 100, clock: Clock | None = None
) -> ReadyTargetCache:
    cache = ReadyTargetCache(repo, repo, size=size, clock=clock or Clock())
    await cache.start()
    return cache


async def _ids(cache: ReadyTargetCache, ids: Sequence[str]) -> dict[str, DownloadTarget]:
    return {t.image_id: t for t in await cache.find_download_targets(ids, "small", FORMATS)}


async def test_ready_targets_are_answered_from_memory_the_second_time() -> None:
    repo = InMemoryImageRepository()
    images = [await _image(repo) for _ in range(3)]
    ids = [i.id for i in images]
    cache = await _cache(repo)

    first = await _ids(cache, ids)
    queries = repo.queries
    second = await _ids(cache, ids)

    assert second == first and set(first) == set(ids)
    assert all(t.key and t.key.endswith("/small.webp") for t in first.values())
    assert repo.queries == queries, "a warm lookup must not ask the reader"
    assert len(cache) == 3


async def test_a_deleted_image_is_never_answered_from_memory() -> None:
    repo = InMemoryImageRepository()
    kept, doomed = await _image(repo), await _image(repo)
    cache = await _cache(repo)
    await _ids(cache, [kept.id, doomed.id])

    assert await repo.delete(doomed.id) is not None
    after = await _ids(cache, [kept.id, doomed.id])

    assert set(after) == {kept.id}, "the deletion is read before answering"
    assert len(cache) == 1


async def test_images_not_ready_are_asked_for_every_time() -> None:
    repo = InMemoryImageRepository()
    pending = await _image(repo, ImageStatus.PENDING)
    cache = await _cache(repo)

    assert (await _ids(cache, [pending.id]))[pending.id].status is ImageStatus.PENDING
    ready = await _image(repo)  # the processor finishes: the record turns READY
    repo.records[pending.id] = dataclasses.replace(
        ready, id=pending.id, object_key=pending.object_key
    )
    queries = repo.queries
    now = (await _ids(cache, [pending.id]))[pending.id]

    assert now.status is ImageStatus.READY and now.key is not None
    assert repo.queries == queries + 1 and len(cache) == 1


class GatedReader:
    """Reads at once, then holds its answer until released: a Postgres query whose snapshot
    predates a deletion that commits while the answer is on its way."""

    def __init__(self, inner: InMemoryImageRepository) -> None:
        self.inner = inner
        self.gate: asyncio.Event | None = None

    async def find_by_id(self, image_id: str) -> None:
        raise AssertionError("not used")

    async def find_download_targets(
        self, image_ids: Sequence[str], preset: str, formats: Sequence[str]
    ) -> list[DownloadTarget]:
        answer = await self.inner.find_download_targets(image_ids, preset, formats)
        if self.gate is not None:
            await self.gate.wait()
        return answer


async def test_a_load_that_raced_a_deletion_is_not_kept() -> None:
    repo = InMemoryImageRepository()
    doomed, other = await _image(repo), await _image(repo)
    reader = GatedReader(repo)
    cache = ReadyTargetCache(reader, repo, size=100)
    await cache.start()

    reader.gate = asyncio.Event()
    slow = asyncio.create_task(cache.find_download_targets([doomed.id], "small", FORMATS))
    await asyncio.sleep(0)  # the slow lookup has read and is waiting
    await repo.delete(doomed.id)
    reader.gate.set()  # another request hears of the deletion while the slow one is out
    await _ids(cache, [other.id])
    await slow  # its answer was true when read; it must not be kept

    assert await _ids(cache, [doomed.id]) == {}


async def test_everything_is_dropped_after_a_quiet_spell_longer_than_the_feed_lasts() -> None:
    repo = InMemoryImageRepository()
    image = await _image(repo)
    clock = Clock()
    cache = ReadyTargetCache(repo, repo, size=100, idle_limit_seconds=60, clock=clock)
    await cache.start()
    await _ids(cache, [image.id])

    clock.now += 61
    queries = repo.queries
    await _ids(cache, [image.id])

    assert repo.queries == queries + 1, "nothing cached before the quiet spell is trusted"


async def test_the_cache_is_bounded_oldest_first() -> None:
    repo = InMemoryImageRepository()
    images = [await _image(repo) for _ in range(3)]
    cache = await _cache(repo, size=2)
    for image in images:
        await _ids(cache, [image.id])

    queries = repo.queries
    await _ids(cache, [images[0].id])

    assert len(cache) == 2 and repo.queries == queries + 1


async def test_lookups_before_start_are_refused() -> None:
    repo = InMemoryImageRepository()
    cache = ReadyTargetCache(repo, repo, size=10)
    with pytest.raises(RuntimeError, match="start"):
        await cache.find_download_targets(["x"], "small", FORMATS)


class GatedFeed:
    """The fake's feed, but a read takes its snapshot at once and answers when released."""

    def __init__(self, inner: InMemoryImageRepository) -> None:
        self.inner = inner
        self.gate = asyncio.Event()
        self.gate.set()
        self.snapshotted = asyncio.Event()

    async def deletion_horizon(self) -> int:
        return await self.inner.deletion_horizon()

    async def deletions_since(self, horizon: int) -> tuple[int, list[str]]:
        answer = await self.inner.deletions_since(horizon)
        self.snapshotted.set()
        await self.gate.wait()
        return answer


async def _cached_behind_gated_feed(
    min_read_interval_seconds: float = 0.0,
) -> tuple[InMemoryImageRepository, ImageRecord, GatedFeed, ReadyTargetCache]:
    repo = InMemoryImageRepository()
    image = await _image(repo)
    feed = GatedFeed(repo)
    cache = ReadyTargetCache(
        repo,
        feed,
        size=100,
        min_read_interval_seconds=min_read_interval_seconds,
        clock=Clock(),  # stands still: a spacing, when asked for, is always waited out in full
    )
    await cache.start()
    await _ids(cache, [image.id])  # cached
    return repo, image, feed, cache


async def test_concurrent_lookups_share_feed_reads() -> None:
    _, image, feed, cache = await _cached_behind_gated_feed()
    reads = cache.feed_reads

    feed.gate.clear()
    lookups = [asyncio.create_task(_ids(cache, [image.id])) for _ in range(10)]
    await asyncio.sleep(0)
    feed.gate.set()
    answers = await asyncio.gather(*lookups)

    assert all(set(a) == {image.id} for a in answers)
    assert cache.feed_reads - reads <= 2, "one read in flight, one for everyone who waited"


async def test_a_lookup_never_trusts_a_feed_read_that_began_before_it() -> None:
    repo, doomed, feed, cache = await _cached_behind_gated_feed()

    feed.gate.clear()
    feed.snapshotted.clear()
    early = asyncio.create_task(_ids(cache, [doomed.id]))
    await feed.snapshotted.wait()  # its feed read has looked, and is on its way back
    await repo.delete(doomed.id)  # committed before the next lookup arrives
    late = asyncio.create_task(_ids(cache, [doomed.id]))
    await asyncio.sleep(0)
    feed.gate.set()

    await early  # concurrent with the delete: either answer is right
    assert await late == {}, "arrived after the delete: must not be answered from memory"


async def test_reads_for_overlapping_lookups_are_spaced_so_late_arrivals_join_them() -> None:
    # The clock stands still, so the read queued behind the one in flight waits the whole
    # spacing; lookups arriving during that wait must join it instead of queueing a third.
    _, image, feed, cache = await _cached_behind_gated_feed(min_read_interval_seconds=0.5)
    reads = cache.feed_reads

    feed.gate.clear()
    feed.snapshotted.clear()
    first = asyncio.create_task(_ids(cache, [image.id]))
    await feed.snapshotted.wait()  # a read is in flight
    waiting = [asyncio.create_task(_ids(cache, [image.id])) for _ in range(5)]
    await asyncio.sleep(0)
    feed.gate.set()
    await first  # the first read is done; the queued one now waits out the spacing
    for _ in range(10):  # (without the spacing it would start and finish meanwhile)
        await asyncio.sleep(0)
    late = [asyncio.create_task(_ids(cache, [image.id])) for _ in range(5)]
    answers = await asyncio.gather(*waiting, *late)

    assert all(set(a) == {image.id} for a in answers)
    assert cache.feed_reads - reads == 2, "the late lookups joined the spaced read"


async def test_a_sequential_caller_never_waits_for_the_spacing() -> None:
    # An hour's spacing with the clock standing still: any wait would never end.
    repo = InMemoryImageRepository()
    image = await _image(repo)
    cache = ReadyTargetCache(repo, repo, size=100, min_read_interval_seconds=3600, clock=Clock())
    await cache.start()

    async def ten_in_a_row() -> None:
        for _ in range(10):
            assert set(await _ids(cache, [image.id])) == {image.id}

    await asyncio.wait_for(ten_in_a_row(), timeout=30)
    assert cache.feed_reads == 10, "each lookup read the feed itself, at once"
