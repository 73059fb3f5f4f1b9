"""What the delivery use cases need from the outside world."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from imagery.common.domain import DownloadTarget, ImageRecord


class ImageReader(Protocol):
    async def find_by_id(self, image_id: str) -> ImageRecord | None: ...

    async def find_download_targets(
        self, image_ids: Sequence[str], preset: str, formats: Sequence[str]
    ) -> list[DownloadTarget]: ...


class DeletionFeed(Protocol):
    """Deleted image ids in commit-safe order (see migration 0004)."""

    async def deletion_horizon(self) -> int: ...

    async def deletions_since(self, horizon: int) -> tuple[int, list[str]]:
        """(next horizon, ids deleted at or after `horizon`); repeats are possible."""
        ...


@dataclass(frozen=True, slots=True)
class SignedUrls:
    urls: list[str]  # one per key, in order
    expire_time: datetime  # shared: all keys of one call fall in one expiry bucket


class UrlSigner(Protocol):
    async def sign_many(self, object_keys: Sequence[str]) -> SignedUrls:
        """One signed URL per key, in order; a key signed again within the same expiry
        bucket gets the identical URL."""
