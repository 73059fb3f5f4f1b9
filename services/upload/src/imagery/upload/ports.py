"""What the upload use cases need from the outside world. `ImageRepository` is the whole
contract of `imagery.common.db.images.PostgresImageRepository` (tests/integration/
test_repository.py holds it and the fake to it); the other services declare the part they
use."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from imagery.common.domain import DeletedImage, DownloadTarget, ImageRecord, ImageStatus

__all__ = ["ImageDeleter", "ImageRepository", "ObjectDeleter", "PresignedUpload", "UploadSigner"]


@dataclass(frozen=True, slots=True)
class PresignedUpload:
    url: str
    method: str
    headers: dict[str, str]
    expires_in_seconds: int


class ImageRepository(Protocol):
    async def save(self, record: ImageRecord) -> None:
        """Insert a new record; raises `ImageAlreadyExists` if the id is taken."""

    async def find_by_id(self, image_id: str) -> ImageRecord | None: ...

    async def find_download_targets(
        self, image_ids: Sequence[str], preset: str, formats: Sequence[str]
    ) -> list[DownloadTarget]:
        """For each existing id, in one round trip: its status and, when READY, the `preset`
        variant in the first of `formats` that exists (else key None)."""

    async def update_status(
        self,
        image_id: str,
        status: ImageStatus,
        *,
        size_bytes: int | None = None,
        failure_reason: str | None = None,
        only_from: Collection[ImageStatus] | None = None,
    ) -> bool:
        """Set the status (and optionally size / failure reason); `only_from` makes it
        conditional. Returns whether a row changed. Always moves `updated_at`."""

    async def claim_unfinished(
        self, *, idle_seconds: float, lease_seconds: float, limit: int = 100
    ) -> list[ImageRecord]:
        """Up to `limit` records still pending or processing, untouched for `idle_seconds` and
        not swept in the last `lease_seconds`, oldest first; each is marked swept, so a
        concurrent sweep (another pod's) takes other rows."""

    async def claim_for_processing(
        self, image_id: str, *, stale_after_seconds: float
    ) -> ImageRecord | None:
        """`pending` -> `processing`, or re-claim a `processing` record untouched for
        `stale_after_seconds` (its worker crashed). None when someone else owns it or it
        is already terminal."""


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
