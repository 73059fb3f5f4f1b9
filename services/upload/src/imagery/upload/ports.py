"""What the upload use cases need from the outside world."""

from __future__ import annotations

from typing import Protocol

from imagery.common.ports import ImageRepository, PresignedUpload

__all__ = ["ImageRepository", "UploadSigner"]


class UploadSigner(Protocol):
    async def presign_put(
        self, key: str, content_type: str, expires_in_seconds: int
    ) -> PresignedUpload: ...
