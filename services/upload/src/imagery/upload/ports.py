"""What the upload use cases need from the outside world."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from imagery.common.domain import DeletedImage
from imagery.common.ports import ImageRepository

__all__ = ["ImageDeleter", "ImageRepository", "ObjectDeleter", "PresignedUpload", "UploadSigner"]


@dataclass(frozen=True, slots=True)
class PresignedUpload:
    url: str
    method: str
    headers: dict[str, str]
    expires_in_seconds: int


class ImageDeleter(Protocol):
    async def delete(self, image_id: str) -> DeletedImage | None:
        """Remove the record and its content reference in one transaction; the last reference
        leaves the content behind as a tombstone for the processor's collector."""
        ...


class ObjectDeleter(Protocol):
    async def delete(self, key: str) -> None: ...


class UploadSigner(Protocol):
    async def presign_put(
        self, key: str, content_type: str, expires_in_seconds: int
    ) -> PresignedUpload: ...
