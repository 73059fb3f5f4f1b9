"""What the delivery use cases need from the outside world."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from imagery.common.domain import ImageRecord


class ImageReader(Protocol):
    async def find_by_id(self, image_id: str) -> ImageRecord | None: ...

    async def find_by_ids(self, image_ids: Sequence[str]) -> list[ImageRecord]: ...


@dataclass(frozen=True, slots=True)
class SignedUrl:
    url: str
    expire_time: datetime


class UrlSigner(Protocol):
    async def sign_many(self, object_keys: Sequence[str]) -> list[SignedUrl]:
        """One signed URL per key, in order; keys repeat-signed within an expiry bucket
        get the identical URL."""
