"""Upload use cases: only ports and domain types."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from imagery.common.domain import ImageRecord, ImageStatus
from imagery.common.errors import DeclarationRequired, InvalidArgument
from imagery.common.ids import new_image_id, require_image_id
from imagery.common.quotas import Quotas
from imagery.common.storage_keys import GLOBAL_SCOPE, upload_key
from imagery.common.telemetry import current_trace_context
from imagery.common.tenancy import Principal, SettingsPolicy
from imagery.upload.ports import (
    ImageDeleter,
    ImageRepository,
    ObjectDeleter,
    PresignedUpload,
    UploadSigner,
)
from imagery.upload.validation import (
    validate_content_type,
    validate_declared_size,
    validate_file_name,
    validate_sha256,
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


class CreateUploadUrl:
    def __init__(
        self,
        images: ImageRepository,
        signer: UploadSigner,
        *,
        expiry_seconds: int,
        policy: SettingsPolicy,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._images = images
        self._signer = signer
        self._expiry_seconds = expiry_seconds
        self._policy = policy
        self._clock = clock

    async def __call__(self, caller: Principal, request: UploadRequest) -> UploadTicket:
        settings = self._policy.effective(caller.settings)
        content_type = validate_content_type(request.content_type, settings.content_types)
        validate_file_name(request.file_name)
        method = validate_upload_method(request.method)
        size = validate_declared_size(request.size_bytes, settings.max_upload_bytes)
        sha256 = validate_sha256(request.sha256)
        if method == "POST" and (size is not None or sha256 is not None):
            raise InvalidArgument(
                "upload_method",
                "is POST, which cannot carry a declared size_bytes or sha256",
                "declare them with PUT, or send neither with POST",
            )
        if settings.require_declared_upload and (size is None or sha256 is None):
            raise DeclarationRequired(caller.project_id)
        image_id = new_image_id()
        key = upload_key(GLOBAL_SCOPE, image_id)
        expire_time = self._clock() + timedelta(seconds=self._expiry_seconds)
        record = ImageRecord(
            id=image_id,
            status=ImageStatus.PENDING,
            content_type=content_type,
            file_name=request.file_name,
            object_key=key,
            trace_context=current_trace_context(),  # the processor's span links back to it
            project_id=caller.project_id,
            reserved_bytes=settings.max_upload_bytes if size is None else size,
        )
        # The record must exist before the URL is handed out; signing needs no I/O, so it
        # runs while the INSERT is in flight. If the INSERT fails, no URL leaves.
        _, presigned = await asyncio.gather(
            self._images.save(record, principal=caller.name, quotas=Quotas.of(settings)),
            self._sign(method, key, content_type, size, sha256, settings.max_upload_bytes),
        )
        return UploadTicket(
            image_id=image_id,
            upload_url=presigned.url,
            method=presigned.method,
            required_headers=dict(presigned.headers),
            expire_time=expire_time,
            max_size_bytes=settings.max_upload_bytes,
            form_fields=dict(presigned.fields),
        )

    async def _sign(
        self,
        method: str,
        key: str,
        content_type: str,
        size: int | None,
        sha256: str | None,
        max_size: int,
    ) -> PresignedUpload:
        if method == "POST":
            return await self._signer.presign_post(
                key, content_type, self._expiry_seconds, max_size_bytes=max_size
            )
        return await self._signer.presign_put(
            key, content_type, self._expiry_seconds, size_bytes=size, sha256=sha256
        )


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
