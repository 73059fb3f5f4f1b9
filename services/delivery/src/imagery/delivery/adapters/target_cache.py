"""ReadyTargetCache: the download targets of READY images, kept in process, so a warm batch
costs Postgres one tiny query instead of an index probe per image.

Why it is safe: a READY record never changes until it is deleted (its blob, and so its
variants, are pinned by the reference count), so deletion is the only event to hear about.
Before answering, every lookup reads the deletion feed (migration 0004) from the horizon of
the previous read and evicts what it names: an image deleted before the request arrived is
never answered from here. A lookup that loaded from Postgres while a deletion of one of its
images was reported does not cache that image. After a long quiet spell (longer than the
feed is kept) everything is dropped. Only READY targets are kept: PENDING, PROCESSING and
missing images are asked for every time, so they turn READY as soon as Postgres says so.

Concurrent lookups share feed reads, but only a read that starts after they arrived: a lookup
that finds a read in flight waits for the next one, which every lookup arriving meanwhile
joins. While lookups overlap like that, reads also start at most every
`min_read_interval_seconds`: a read costs a Postgres round trip, and without the spacing
concurrent batches still made nearly one read each, since a read is quicker than the gap
between arrivals. A lookup that finds no read in flight (any sequential caller) reads at once
and never waits for the spacing.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Sequence

from opentelemetry import metrics

from imagery.common.db.deletions import DELETION_FEED_RETENTION_SECONDS
from imagery.common.domain import DownloadTarget, ImageRecord
from imagery.delivery.ports import DeletionFeed, ImageReader

_LOOKUPS = metrics.get_meter(__name__).create_counter(
    "imagery.delivery.target_cache.lookups",
    description="Download-target cache lookups by result (hit ratio = hit / all)",
)
_DELETED_MEMORY = 10_000  # recent deletions remembered to veto loads that raced them
MIN_READ_INTERVAL_SECONDS = 0.001


class ReadyTargetCache:
    """An `ImageReader` in front of Postgres. `start()` before the first lookup."""

    def __init__(
        self,
        images: ImageReader,
        feed: DeletionFeed,
        *,
        size: int,
        idle_limit_seconds: float = DELETION_FEED_RETENTION_SECONDS / 2,
        min_read_interval_seconds: float = MIN_READ_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._images = images
        self._feed = feed
        self._size = max(1, size)
        self._idle_limit = idle_limit_seconds
        self._min_interval = min_read_interval_seconds
        self._clock = clock
        self._sleep = sleep
        self._last_read_started = -math.inf
        # image id -> (preset, formats) -> target; insertion order is eviction order
        self._entries: dict[str, dict[tuple[str, tuple[str, ...]], DownloadTarget]] = {}
        self._horizon: int | None = None
        self._checked = 0.0
        self._epoch = 0  # +1 per feed read that reported deletions
        self._deleted: dict[str, int] = {}  # image id -> epoch its deletion was reported
        self._forgotten_before = 0  # loads started before this epoch are never cached
        self._running: asyncio.Future[None] | None = None  # the feed read in flight
        self._queued: asyncio.Future[None] | None = None  # the next one, not yet started
        self.feed_reads = 0

    async def start(self) -> None:
        self._horizon = await self._feed.deletion_horizon()
        self._checked = self._clock()

    def __len__(self) -> int:
        return len(self._entries)

    async def find_by_id(self, image_id: str) -> ImageRecord | None:
        return await self._images.find_by_id(image_id)  # GetImage shows the live state

    async def find_download_targets(
        self, image_ids: Sequence[str], preset: str, formats: Sequence[str]
    ) -> list[DownloadTarget]:
        await self._catch_up()
        want = (preset, tuple(formats))
        found: list[DownloadTarget] = []
        missing: list[str] = []
        for image_id in image_ids:
            target = self._entries.get(image_id, {}).get(want)
            if target is None:
                missing.append(image_id)
            else:
                found.append(target)
        _LOOKUPS.add(len(found), {"result": "hit"})
        if not missing:
            return found
        _LOOKUPS.add(len(missing), {"result": "miss"})
        started = self._epoch
        loaded = await self._images.find_download_targets(missing, preset, formats)
        if started >= self._forgotten_before:
            for target in loaded:
                servable = target.servable
                if servable and self._deleted.get(target.image_id, -1) < started:
                    self._keep(target.image_id, want, target)
        return found + loaded

    def _keep(
        self, image_id: str, want: tuple[str, tuple[str, ...]], target: DownloadTarget
    ) -> None:
        entry = self._entries.get(image_id)
        if entry is None:
            if len(self._entries) >= self._size:
                del self._entries[next(iter(self._entries))]
            entry = self._entries[image_id] = {}
        entry[want] = target

    async def _catch_up(self) -> None:
        """Return once a feed read that started after this call has been applied."""
        if self._horizon is None:
            raise RuntimeError("ReadyTargetCache.start() was not awaited")
        if self._queued is None:
            self._queued = asyncio.ensure_future(self._read_after(self._running))
        await asyncio.shield(self._queued)  # one caller's cancellation is not the others'

    async def _read_after(self, previous: asyncio.Future[None] | None) -> None:
        if previous is not None:  # lookups overlap: space the reads out, they all join
            with contextlib.suppress(Exception):  # its callers saw its failure
                await asyncio.shield(previous)
            wait = self._last_read_started + self._min_interval - self._clock()
            if wait > 0:
                await self._sleep(wait)
        this = self._queued
        self._queued = None  # from here on, new callers queue the next read
        self._running = this
        try:
            await self._read_feed()
        finally:
            if self._running is this:
                self._running = None

    async def _read_feed(self) -> None:
        assert self._horizon is not None
        self.feed_reads += 1
        started = self._last_read_started = self._clock()
        if started - self._checked > self._idle_limit:  # the feed may have been pruned since
            self._forget_everything()
        horizon, deleted = await self._feed.deletions_since(self._horizon)
        if deleted:
            self._epoch += 1
            for image_id in deleted:
                self._entries.pop(image_id, None)
                self._deleted[image_id] = self._epoch
            if len(self._deleted) > _DELETED_MEMORY:
                self._forget_everything()
        self._horizon = max(self._horizon, horizon)
        self._checked = max(self._checked, started)

    def _forget_everything(self) -> None:
        self._entries.clear()
        self._deleted.clear()
        self._epoch += 1
        self._forgotten_before = self._epoch
