"""What the delivery use cases need from the outside world."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from imagery.common.domain import DownloadTarget, ImageRecord


class ImageReader(Protocol):
    """Reads of one project's images; another project's ids are never found."""

    async def find_by_id(self, project_id: str, image_id: str) -> ImageRecord | None: ...

    async def find_download_targets(
        self, project_id: str, image_ids: Sequence[str], preset: str, formats: Sequence[str]
    ) -> list[DownloadTarget]: ...


@dataclass(frozen=True, slots=True)
class SignedUrls:
    urls: list[str]  # one per key, in order
    expire_time: datetime  # shared: all keys of one call fall in one expiry bucket


class UrlSigner(Protocol):
    async def sign_many(
        self, object_keys: Sequence[str], expiry_seconds: int | None = None
    ) -> SignedUrls:
        """One signed URL per key, in order, living at least `expiry_seconds` (the signer's
        default when None); a key signed again within the same expiry bucket gets the
        identical URL."""
