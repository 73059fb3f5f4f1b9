"""What the upload use cases need from the outside world. `ImageRepository` is the whole
contract of `imagery.common.db.images.PostgresImageRepository` (tests/integration/
test_repository.py holds it and the fake to it); the other services declare the part they
use."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from imagery.common.api_keys import NewKey
from imagery.common.domain import DeletedImage, DownloadTarget, ImageRecord, ImageStatus
from imagery.common.profiles import VariantProfile
from imagery.common.quotas import UNLIMITED, Quotas
from imagery.common.request_ids import UsedRequestId
from imagery.common.tenancy import (
    NO_KEY_LIMITS,
    Actor,
    ApiKeyInfo,
    KeyLimits,
    Project,
    ProjectSettings,
    Scope,
)

__all__ = [
    "ApiKeyInfo",
    "ImageDeleter",
    "ImageLabeler",
    "ImageRepository",
    "NewKey",
    "ObjectDeleter",
    "PresignedUpload",
    "ProjectStore",
    "UploadRequests",
    "UploadSigner",
    "UsedRequestId",
]


@dataclass(frozen=True, slots=True)
class PresignedUpload:
    """How the client sends the bytes: `method` PUT to `url` with exactly `headers`, or
    POST to `url` as multipart/form-data with `fields` (in order) before the file."""

    url: str
    method: str
    headers: dict[str, str]
    expires_in_seconds: int
    fields: dict[str, str] = field(default_factory=dict)


class ImageRepository(Protocol):
    """Every read and write of a caller's images names the caller's project; another
    project's image is never found. The processor's methods span projects."""

    async def save(
        self, record: ImageRecord, *, principal: str, quotas: Quotas = UNLIMITED
    ) -> None:
        """Insert a new record (in `record.project_id`) with its audit event; raises
        `ImageAlreadyExists` if the id is taken. Under `quotas` the record is admitted only
        if the project's usage, with it, stays within them (it counts as one image,
        `record.reserved_bytes` bytes and one upload today), else `QuotaExceeded`; concurrent
        saves are admitted one after another, never past a quota."""

    async def find_by_id(self, project_id: str, image_id: str) -> ImageRecord | None: ...

    async def update_labels(
        self, project_id: str, image_id: str, labels: Mapping[str, str], *, principal: str
    ) -> ImageRecord | None:
        """As `ImageLabeler.update_labels`."""

    async def find_for_processing(self, image_id: str) -> ImageRecord | None:
        """The record in whichever project holds it."""

    async def find_download_targets(
        self, project_id: str, image_ids: Sequence[str], preset: str, formats: Sequence[str]
    ) -> list[DownloadTarget]:
        """For each of the project's ids, in one round trip: its status and, when READY, the
        `preset` variant in the first of `formats` that exists (else key None)."""

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
        is already terminal. The record carries its project's content scope and settings."""


class ImageLabeler(Protocol):
    async def update_labels(
        self, project_id: str, image_id: str, labels: Mapping[str, str], *, principal: str
    ) -> ImageRecord | None:
        """Replace the labels of the project's image and move its `updated_at`, audited as
        `principal`'s, in one transaction; the record as it now is, or None when the project
        has no such image."""
        ...


class UploadRequests(Protocol):
    """CreateUploadUrl's request ids (`imagery.common.db.upload_requests`), kept per project
    for `REQUEST_ID_RETENTION_SECONDS`."""

    async def save_once(
        self,
        record: ImageRecord,
        request_id: str,
        fingerprint: str,
        *,
        principal: str,
        quotas: Quotas = UNLIMITED,
    ) -> UsedRequestId | None:
        """Save `record` as `ImageRepository.save` does, with `request_id` (and `fingerprint`,
        the call's other fields) for it, in one transaction: None. Unless the project used
        `request_id` within the retention: then nothing is saved and that use is returned.
        Concurrent calls with one new request id save one record; the others return it."""
        ...


class ImageDeleter(Protocol):
    async def delete(
        self, project_id: str, image_id: str, *, principal: str
    ) -> DeletedImage | None:
        """Remove the project's record and its content reference in one transaction, audited
        as `principal`'s; the last reference leaves the content behind as a tombstone for
        the processor's collector. None when the project has no such image."""
        ...


class ObjectDeleter(Protocol):
    async def delete(self, key: str) -> None: ...


class UploadSigner(Protocol):
    async def presign_put(
        self,
        key: str,
        content_type: str,
        expires_in_seconds: int,
        *,
        size_bytes: int | None = None,
        sha256: str | None = None,
    ) -> PresignedUpload:
        """A PUT that S3 accepts only with this Content-Type and, when given, exactly
        `size_bytes` bytes (Content-Length signed) whose SHA-256 is `sha256` (lower-case hex;
        signed as `x-amz-checksum-sha256`, base64). `headers` lists every header to send."""

    async def presign_post(
        self, key: str, content_type: str, expires_in_seconds: int, *, max_size_bytes: int
    ) -> PresignedUpload:
        """A browser form POST whose policy fixes the key and Content-Type and caps the body
        with `content-length-range` [1, max_size_bytes]; `headers` is empty."""


class ProjectStore(Protocol):
    """Projects and keys (`imagery.common.db.projects.PostgresProjects`); every change is
    audited as `actor`'s."""

    async def create_project(self, project: Project, actor: Actor) -> Project:
        """Raises `ProjectAlreadyExists` when the id is taken (deleted projects included)."""

    async def get_project(self, project_id: str) -> Project | None: ...

    async def list_projects(
        self, *, after: str, limit: int, show_deleted: bool, only: str | None
    ) -> list[Project]: ...

    async def update_project(
        self,
        project_id: str,
        actor: Actor,
        *,
        display_name: str | None,
        settings: ProjectSettings | None,
        profile: VariantProfile | None = None,
    ) -> Project | None:
        """None when the project is missing or deleted. A profile becomes the project's next
        version."""

    async def delete_project(
        self, project_id: str, actor: Actor, *, retention_seconds: int
    ) -> Project | None: ...

    async def undelete_project(self, project_id: str, actor: Actor) -> Project | None:
        """None once the project's purge has begun."""

    async def create_key(
        self,
        project_id: str,
        actor: Actor,
        *,
        display_name: str,
        scopes: Sequence[Scope],
        expire_time: datetime | None,
        limits: KeyLimits = NO_KEY_LIMITS,
    ) -> tuple[NewKey, ApiKeyInfo] | None:
        """None when the project is missing or deleted."""

    async def list_keys(self, project_id: str, *, after: str, limit: int) -> list[ApiKeyInfo]: ...

    async def revoke_key(self, project_id: str, key_id: str, actor: Actor) -> ApiKeyInfo | None: ...
