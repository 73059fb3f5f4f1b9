"""What the upload use cases need from the outside world."""

from __future__ import annotations

from typing import Protocol

from imagery.common.domain import DeletedImage
from imagery.common.ports import ImageRepository, PresignedUpload

__all__ = ["Collector", "ImageDeleter", "ImageRepository", "ObjectDeleter", "UploadSigner"]


class ImageDeleter(Protocol):
    async def delete(self, image_id: str) -> DeletedImage | None: ...


class ObjectDeleter(Protocol):
    async def delete(self, key: str) -> None: ...


class Collector(Protocol):
    async def collect(self, sha256: str) -> bool: ...


class UploadSigner(Protocol):
    async def presign_put(
        self, key: str, content_type: str, expires_in_seconds: int
    ) -> PresignedUpload: ...
