"""Upload use cases: only ports and domain types."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from imagery.common.domain import ImageRecord, ImageStatus
from imagery.common.errors import (
    DeclarationRequired,
    ImageNotFound,
    InvalidArgument,
    RequestIdReused,
    RequestImageDeleted,
)
from imagery.common.ids import new_image_id, require_image_id
from imagery.common.quotas import Quotas
from imagery.common.request_ids import UsedRequestId
from imagery.common.storage_keys import GLOBAL_SCOPE, upload_key
from imagery.common.telemetry import current_trace_context
from imagery.common.tenancy import EffectiveSettings, Principal, SettingsPolicy
from imagery.common.upload_limits import UploadLimits
from imagery.upload.ports import (
    ImageDeleter,
    ImageLabeler,
    ImageRepository,
    ObjectDeleter,
    PresignedUpload,
    UploadRequests,
    UploadSigner,
)
from imagery.upload.validation import (
    validate_content_type,
    validate_declared_size,
    validate_file_name,
    validate_labels,
    validate_request_id,
    validate_sha256,
    validate_update_mask,
    validate_upload_limits,
    validate_upload_method,
)


@dataclass(frozen=True, slots=True)
class UploadTicket:
    image_id: str
    upload_url: str
    method: str
    required_headers: dict[str, str]
    expire_time: datetime
    max_size_bytes: int
    form_fields: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class UploadRequest:
    content_type: str
    file_name: str
    size_bytes: int | None = None  # declared: signed into the URL, reserved against quota
    sha256: str = ""  # declared (lower-case hex): S3 refuses other bytes
    method: str = ""  # "" or "PUT", or "POST" for browsers
    labels: Mapping[str, str] = field(default_factory=dict)
    request_id: str = ""  # AIP-155: a retry with the same id answers the first call's image
    limits: UploadLimits | None = None  # stricter than the project's, for this upload only


@dataclass(frozen=True, slots=True)
class _Upload:
    """An UploadRequest as validated: what is signed and stored."""

    content_type: str
    file_name: str
    method: str
    size: int | None
    sha256: str | None
    labels: dict[str, str]
    request_id: str | None
    limits: UploadLimits | None = None

    def fingerprint(self) -> str:
        """The call without its request id, canonically: every retry of a call gives the
        same, and a call that differs in any field (labels in any order being the same
        labels, and "" the same method as "PUT") another."""
        fields = {
            "content_type": self.content_type,
            "file_name": self.file_name,
            "method": self.method,
            "size_bytes": self.size,
            "sha256": self.sha256,
            "labels": self.labels,
        }
        if self.limits is not None:  # absent: the fingerprint calls without limits always had
            fields["limits"] = self.limits.to_json()
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()


def _validated(
    request: UploadRequest,
    settings: EffectiveSettings,
    project_id: str,
    image_ceilings: tuple[int, int],
) -> _Upload:
    max_pixels, max_frames = image_ceilings
    upload = _Upload(
        content_type=validate_content_type(request.content_type, settings.content_types),
        file_name=validate_file_name(request.file_name),
        method=validate_upload_method(request.method),
        size=validate_declared_size(request.size_bytes, settings.max_upload_bytes),
        sha256=validate_sha256(request.sha256),
        labels=validate_labels(request.labels),
        request_id=validate_request_id(request.request_id),
        limits=validate_upload_limits(
            request.limits, settings, max_pixels=max_pixels, max_frames=max_frames
        ),
    )
    if upload.method == "POST" and (upload.size is not None or upload.sha256 is not None):
        raise InvalidArgument(
            "upload_method",
            "is POST, which cannot carry a declared size_bytes or sha256",
            "declare them with PUT, or send neither with POST",
        )
    if settings.require_declared_upload and (upload.size is None or upload.sha256 is None):
        raise DeclarationRequired(project_id)
    return upload


class CreateUploadUrl:
    """A new PENDING image and a presigned URL for its bytes. With a request id, once per
    project and id within the retention: a retry of the same call answers the image the
    first created (whatever its status since) with a fresh URL, and saves and counts nothing;
    the id with other fields is REQUEST_ID_REUSED, and with an image deleted since,
    IMAGE_NOT_FOUND."""

    def __init__(
        self,
        images: ImageRepository,
        signer: UploadSigner,
        *,
        requests: UploadRequests,
        expiry_seconds: int,
        policy: SettingsPolicy,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        max_image_pixels: int = 40_000_000,
        max_image_frames: int = 100,
    ) -> None:
        # The deployment's MAX_IMAGE_PIXELS and MAX_IMAGE_FRAMES: what an upload's own limits
        # may not exceed (no project setting lowers them).
        self._image_ceilings = (max_image_pixels, max_image_frames)
        self._images = images
        self._signer = signer
        self._requests = requests
        self._expiry_seconds = expiry_seconds
        self._policy = policy
        self._clock = clock

    async def __call__(self, caller: Principal, request: UploadRequest) -> UploadTicket:
        settings = self._policy.effective(caller.settings)
        upload = _validated(request, settings, caller.project_id, self._image_ceilings)
        image_id = new_image_id()
        key = upload_key(GLOBAL_SCOPE, image_id)
        expire_time = self._clock() + timedelta(seconds=self._expiry_seconds)
        record = ImageRecord(
            id=image_id,
            status=ImageStatus.PENDING,
            content_type=upload.content_type,
            file_name=upload.file_name,
            object_key=key,
            trace_context=current_trace_context(),  # the processor's span links back to it
            project_id=caller.project_id,
            reserved_bytes=settings.max_upload_bytes if upload.size is None else upload.size,
            labels=upload.labels,
            upload_limits=upload.limits,
        )
        # The record must exist before the URL is handed out; signing needs no I/O, so it
        # runs while the INSERT is in flight. If the INSERT fails, no URL leaves.
        used, presigned = await asyncio.gather(
            self._save(caller, record, upload, Quotas.of(settings)),
            self._sign(upload, key, settings.max_upload_bytes),
        )
        if used is not None:  # a retry: the first call's image, with a URL of its own
            image_id, key = self._earlier(upload, used)
            presigned = await self._sign(upload, key, settings.max_upload_bytes)
        return UploadTicket(
            image_id=image_id,
            upload_url=presigned.url,
            method=presigned.method,
            required_headers=dict(presigned.headers),
            expire_time=expire_time,
            max_size_bytes=settings.max_upload_bytes,
            form_fields=dict(presigned.fields),
        )

    async def _save(
        self, caller: Principal, record: ImageRecord, upload: _Upload, quotas: Quotas
    ) -> UsedRequestId | None:
        if upload.request_id is None:
            await self._images.save(record, principal=caller.name, quotas=quotas)
            return None
        return await self._requests.save_once(
            record, upload.request_id, upload.fingerprint(), principal=caller.name, quotas=quotas
        )

    @staticmethod
    def _earlier(upload: _Upload, used: UsedRequestId) -> tuple[str, str]:
        """The id and upload key of the image the request id's first call created, if this
        call is a retry of it."""
        request_id = upload.request_id or ""
        if used.fingerprint != upload.fingerprint():
            raise RequestIdReused(request_id)
        if used.object_key is None:
            raise RequestImageDeleted(used.image_id, request_id)
        return used.image_id, used.object_key

    async def _sign(self, upload: _Upload, key: str, max_size: int) -> PresignedUpload:
        if upload.method == "POST":
            return await self._signer.presign_post(
                key, upload.content_type, self._expiry_seconds, max_size_bytes=max_size
            )
        return await self._signer.presign_put(
            key,
            upload.content_type,
            self._expiry_seconds,
            size_bytes=upload.size,
            sha256=upload.sha256,
        )


class UpdateImage:
    """AIP-134 for what a caller may change about an image: its labels, replaced whole."""

    def __init__(self, images: ImageLabeler) -> None:
        self._images = images

    async def __call__(
        self,
        caller: Principal,
        *,
        image_id: str,
        update_mask: Sequence[str],
        labels: Mapping[str, str],
    ) -> ImageRecord:
        """The image as it now is; IMAGE_NOT_FOUND for an id the caller's project does not
        have (never created, deleted, or another project's)."""
        require_image_id(image_id, "image.image_id")
        validate_update_mask(update_mask)
        checked = validate_labels(labels, "image.labels")
        updated = await self._images.update_labels(
            caller.project_id, image_id, checked, principal=caller.name
        )
        if updated is None:
            raise ImageNotFound(image_id)
        return updated


class DeleteImage:
    """The caller's reference goes. Shared content stays while other images refer to it; the
    last reference leaves it to the processor's collector, which deletes it after a grace
    period."""

    def __init__(self, images: ImageDeleter, objects: ObjectDeleter) -> None:
        self._images = images
        self._objects = objects

    async def __call__(self, caller: Principal, *, image_id: str) -> bool:
        """False for an id the caller's project does not have: never created, deleted
        already, or another project's (indistinguishable, by design)."""
        deleted = await self._images.delete(
            caller.project_id, require_image_id(image_id), principal=caller.name
        )
        if deleted is None:
            return False  # deleting twice is harmless
        if not deleted.status.terminal:  # the bytes may still sit in uploads/
            await self._objects.delete(deleted.object_key)
        return True
