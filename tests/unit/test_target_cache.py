"""ReadyTargetCache over the in-memory repository: hits skip the reader, a deletion notice
evicts at once, nothing that raced a deletion or is not READY is kept, and nothing is cached
or answered from memory while the change bus is not listening."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from imagery.common.domain import DownloadTarget, ImageStatus
from imagery.common.tenancy import DEFAULT_PROJECT
from imagery.delivery.adapters.target_cache import ReadyTargetCache
from tests.fakes import InMemoryImageRepository
from tests.unit.test_delivery_use_cases import _image

FORMATS = ("webp",)


class Bus:
    def __init__(self) -> None:
        self.connected = True


def _cache(repo: InMemoryImageRepository, bus: Bus, size: int = 100) -> ReadyTargetCache:
    return ReadyTargetCache(repo, size=size, caching=lambda: bus.connected)


async def _ids(
    cache: ReadyTargetCache, ids: Sequence[str], project: str = DEFAULT_PROJECT
) -> dict[str, DownloadTarget]:
    found = await cache.find_download_targets(project, ids, "small", FORMATS)
    return {t.image_id: t for t in found}


async def test_ready_targets_are_answered_from_memory_the_second_time() -> None:
    repo, bus = InMemoryImageRepository(), Bus()
    ids = [(await _image(repo)).id for _ in range(3)]
    cache = _cache(repo, bus)
    first = await _ids(cache, ids)
    queries = repo.queries
    second = await _ids(cache, ids)
    assert second == first and set(first) == set(ids)
    assert all(t.key and t.key.endswith("/small.webp") for t in first.values())
    assert repo.queries == queries, "a warm lookup must not ask the reader"
    assert len(cache) == 3


async def test_a_deletion_notice_evicts_the_image_at_once() -> None:
    repo, bus = InMemoryImageRepository(), Bus()
    image = await _image(repo)
    cache = _cache(repo, bus)
    await _ids(cache, [image.id])
    await repo.delete(DEFAULT_PROJECT, image.id, principal="key:test")
    cache.changed(f"image:{image.id}")
    assert await _ids(cache, [image.id]) == {}, "deleted: never answered from memory"


async def test_images_not_ready_are_asked_for_every_time() -> None:
    repo, bus = InMemoryImageRepository(), Bus()
    pending = await _image(repo, ImageStatus.PENDING)
    cache = _cache(repo, bus)
    for expected in (1, 2, 3):
        before = repo.queries
        found = await _ids(cache, [pending.id])
        assert found[pending.id].status is ImageStatus.PENDING and repo.queries == before + 1
        assert expected
    assert len(cache) == 0


async def test_a_load_that_raced_a_deletion_is_not_kept() -> None:
    repo, bus = InMemoryImageRepository(), Bus()
    image = await _image(repo)
    release = asyncio.Event()
    real = repo.find_download_targets

    async def slow(*args: object, **kwargs: object) -> list[DownloadTarget]:
        found = await real(*args, **kwargs)  # type: ignore[arg-type]
        await release.wait()  # the deletion commits and is announced meanwhile
        return found

    repo.find_download_targets = slow  # type: ignore[method-assign]
    cache = _cache(repo, bus)
    lookup = asyncio.create_task(_ids(cache, [image.id]))
    await asyncio.sleep(0)
    cache.changed(f"image:{image.id}")
    release.set()
    assert image.id in await lookup, "the answer itself was read before the deletion"
    assert len(cache) == 0, "but it is not kept"


async def test_nothing_is_kept_or_answered_from_memory_while_the_bus_is_down() -> None:
    repo, bus = InMemoryImageRepository(), Bus()
    image = await _image(repo)
    cache = _cache(repo, bus)
    await _ids(cache, [image.id])
    bus.connected = False
    cache.reset()  # what the bus does when it loses its connection
    before = repo.queries
    await _ids(cache, [image.id])
    await _ids(cache, [image.id])
    assert repo.queries == before + 2 and len(cache) == 0
    bus.connected = True
    await _ids(cache, [image.id])
    assert len(cache) == 1


async def test_another_projects_lookup_of_a_cached_id_is_not_answered_from_memory() -> None:
    repo, bus = InMemoryImageRepository(), Bus()
    image = await _image(repo)
    cache = _cache(repo, bus)
    await _ids(cache, [image.id])
    assert await _ids(cache, [image.id], project="other-team") == {}


async def test_the_cache_is_bounded_oldest_first() -> None:
    repo, bus = InMemoryImageRepository(), Bus()
    ids = [(await _image(repo)).id for _ in range(3)]
    cache = _cache(repo, bus, size=2)
    for image_id in ids:
        await _ids(cache, [image_id])
    assert len(cache) == 2
    before = repo.queries
    await _ids(cache, ids[1:])
    assert repo.queries == before, "the two newest are kept"
    await _ids(cache, ids[:1])
    assert repo.queries == before + 1, "the oldest went"
