"""ReadyTargetCache: the download targets of READY images, kept in process, so a warm batch
costs Postgres nothing at all.

Why it is safe: a READY record never changes until it is deleted (its blob, and so its
variants, are pinned by the reference count), so deletion is the only event to hear about.
The change bus (`imagery.common.db.changes`) tells every replica of each deletion when it
commits; the cache evicts the image then. A lookup that loaded from Postgres while a
deletion of one of its images was announced does not cache that image. While the bus is not
listening (it lost its connection and has not listened again yet) nothing is cached or
answered from here. Only READY targets are kept: PENDING, PROCESSING and missing images are
asked for every time, so they turn READY as soon as Postgres says so. Entries remember their
project: another project's lookup of the same id is a miss, answered by Postgres (not found).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from opentelemetry import metrics

from imagery.common.domain import DownloadTarget, ImageRecord
from imagery.delivery.ports import ImageReader

_LOOKUPS = metrics.get_meter(__name__).create_counter(
    "imagery.delivery.target_cache.lookups",
    description="Download-target cache lookups by result (hit ratio = hit / all)",
)
_DELETED_MEMORY = 10_000  # recent deletions remembered to veto loads that raced them

Want = tuple[str, tuple[str, ...]]


class ReadyTargetCache:
    """An `ImageReader` in front of Postgres and a change-bus subscriber."""

    def __init__(self, images: ImageReader, *, size: int, caching: Callable[[], bool]) -> None:
        self._images = images
        self._size = max(1, size)
        self._caching = caching
        # image id -> (project id, (preset, formats) -> target); insertion order is eviction
        self._entries: dict[str, tuple[str, dict[Want, DownloadTarget]]] = {}
        self._epoch = 0  # +1 per deletion notice
        self._deleted: dict[str, int] = {}  # image id -> epoch its deletion was announced
        self._forgotten_before = 0  # loads started before this epoch are never cached

    def __len__(self) -> int:
        return len(self._entries)

    # change-bus subscriber
    def changed(self, change: str) -> None:
        kind, _, ident = change.partition(":")
        if kind == "project":  # deleted, purged or restored: its id may name another later
            self._epoch += 1
            self._forgotten_before = self._epoch
            for image_id, (project_id, _) in list(self._entries.items()):
                if project_id == ident:
                    del self._entries[image_id]
            return
        if kind != "image":
            return
        self._epoch += 1
        self._entries.pop(ident, None)
        self._deleted[ident] = self._epoch
        if len(self._deleted) > _DELETED_MEMORY:
            self.reset()

    def reset(self) -> None:
        self._entries.clear()
        self._deleted.clear()
        self._epoch += 1
        self._forgotten_before = self._epoch

    async def find_by_id(self, project_id: str, image_id: str) -> ImageRecord | None:
        return await self._images.find_by_id(project_id, image_id)  # GetImage: live state

    async def find_many(self, project_id: str, image_ids: Sequence[str]) -> list[ImageRecord]:
        return await self._images.find_many(project_id, image_ids)  # BatchGetImages: live

    async def find_download_targets(
        self, project_id: str, image_ids: Sequence[str], preset: str, formats: Sequence[str]
    ) -> list[DownloadTarget]:
        if not self._caching():
            return await self._images.find_download_targets(project_id, image_ids, preset, formats)
        want = (preset, tuple(formats))
        found: list[DownloadTarget] = []
        missing: list[str] = []
        entries = self._entries
        for image_id in image_ids:
            entry = entries.get(image_id)
            target = entry[1].get(want) if entry is not None and entry[0] == project_id else None
            if target is None:
                missing.append(image_id)
            else:
                found.append(target)
        _LOOKUPS.add(len(found), {"result": "hit"})
        if not missing:
            return found
        _LOOKUPS.add(len(missing), {"result": "miss"})
        started = self._epoch
        loaded = await self._images.find_download_targets(project_id, missing, preset, formats)
        if started >= self._forgotten_before and self._caching():
            for target in loaded:
                if target.servable and self._deleted.get(target.image_id, -1) < started:
                    self._keep(project_id, target.image_id, want, target)
        return found + loaded

    def _keep(self, project_id: str, image_id: str, want: Want, target: DownloadTarget) -> None:
        entry = self._entries.get(image_id)
        if entry is None:
            if len(self._entries) >= self._size:
                del self._entries[next(iter(self._entries))]
            entry = self._entries[image_id] = (project_id, {})
        entry[1][want] = target
