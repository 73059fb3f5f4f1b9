"""What the processor needs from the outside world."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from imagery.common.db.outcomes import LinkResult, VerifiedImage
from imagery.common.domain import ImageRecord, VariantInfo
from imagery.common.ports import MessageQueue, ObjectInfo
from imagery.processor.isolation import JobResult

__all__ = ["Images", "IsolatedWork", "MessageQueue", "Objects", "Outcomes"]


class Images(Protocol):
    async def find_by_id(self, image_id: str) -> ImageRecord | None: ...

    async def claim_for_processing(
        self, image_id: str, *, stale_after_seconds: float
    ) -> ImageRecord | None: ...


class Outcomes(Protocol):
    async def link_existing(
        self, image_id: str, sha256: str, declared_format: str
    ) -> LinkResult: ...

    async def mark_ready(
        self,
        image_id: str,
        image: VerifiedImage,
        variants: Sequence[VariantInfo] = (),
        write_objects: Callable[[], Awaitable[None]] | None = None,
    ) -> bool: ...

    async def mark_failed(
        self,
        image_id: str,
        reason: str,
        *,
        size_bytes: int | None = None,
        detected_format: str | None = None,
    ) -> bool: ...

    async def release_claim(self, image_id: str) -> None: ...


class Objects(Protocol):
    async def head(self, key: str) -> ObjectInfo | None: ...

    async def get(self, key: str, *, max_bytes: int) -> bytes | None:
        """None when missing; raises ObjectTooLarge (with `size`) past `max_bytes`."""
        ...

    async def put(
        self, key: str, body: bytes, *, content_type: str, cache_control: str | None = None
    ) -> None: ...

    async def copy(self, source_key: str, key: str, *, content_type: str) -> str | None:
        """The copy's SHA-256 (base64) as the store computed it; None if the source is gone."""
        ...

    async def delete(self, key: str) -> None: ...


class IsolatedWork(Protocol):
    async def run(self, fn: Callable[..., Any], *args: Any) -> JobResult: ...
