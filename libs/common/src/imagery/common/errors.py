"""The error catalog: one class per condition a caller can meet, each with its reason.

A reason is the name of an `imagery.v1.ErrorReason` value without the `ERROR_REASON_` prefix;
it reaches clients as `google.rpc.ErrorInfo.reason`. The gRPC edge (`imagery.common.grpc.errors`)
maps each class to a status code in one table. No gRPC types here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar


@dataclass(frozen=True, slots=True)
class FieldViolation:
    field: str
    description: str


class ImageryError(Exception):
    """Base of every error a caller may see. `message` is shown to the caller verbatim: what
    went wrong and one sentence on what to do."""

    reason: ClassVar[str] = "INTERNAL"
    # Seconds a client should wait before it tries again (sent as google.rpc.RetryInfo).
    retry_after: float | None = None
    # (subject, description) of each limit exceeded (sent as google.rpc.QuotaFailure).
    quota_violations: tuple[tuple[str, str], ...] = ()

    def __init__(
        self,
        message: str,
        *,
        violations: Sequence[FieldViolation] = (),
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.violations = tuple(violations)
        self.metadata: dict[str, str] = dict(metadata or {})


class DependencyUnavailable(ImageryError):
    """A dependency (database, object store, queue) cannot be reached now; safe to retry."""

    reason = "DEPENDENCY_UNAVAILABLE"
    retry_after = 1.0


class RateLimited(ImageryError):
    reason = "RATE_LIMITED"

    def __init__(
        self, subject: str, rpc_class: str, limit: int, window_seconds: int, retry_after: float
    ) -> None:
        super().__init__(
            f"{subject} made more than {limit} {rpc_class} calls in {window_seconds} s: retry "
            f"after {retry_after:.1f} s, or "
            + (
                f"create a key with a higher rate_{rpc_class}_per_minute (the key's own limit)."
                if "/apiKeys/" in subject
                else f"ask the operators to raise rate_{rpc_class}_per_minute."
            ),
            metadata={
                "subject": subject,
                "class": rpc_class,
                "limit": str(limit),
                "window": f"{window_seconds}s",
            },
        )
        self.retry_after = retry_after
        self.quota_violations = (
            (subject, f"at most {limit} {rpc_class} calls per {window_seconds} s"),
        )


class QuotaExceeded(ImageryError):
    """The project stores, or started today, as much as a quota allows."""

    reason = "QUOTA_EXCEEDED"

    def __init__(
        self, project_id: str, over: Sequence[tuple[str, int, int, str]], reserve_bytes: int
    ) -> None:
        name, limit, used, what = over[0]
        if name == "quota_bytes":
            detail = (
                f"stores {used} of its {limit} bytes and this upload reserves {reserve_bytes} "
                "more (declare size_bytes to reserve only what you send)"
            )
        else:
            detail = f"has {used} {what}, its quota is {limit}"
        fix = (
            "try again after 00:00 UTC"
            if name == "quota_uploads_per_day"
            else "delete images it no longer needs"
        )
        super().__init__(
            f"Project {project_id!r} {detail}: {fix}, or ask the operators to raise {name}.",
            metadata={"quota": name, "limit": str(limit), "usage": str(used)},
        )
        self.quota_violations = tuple(
            (f"projects/{project_id}", f"{n}: {u} {w}, limit {lim}") for n, lim, u, w in over
        )


class DeclarationRequired(ImageryError):
    reason = "DECLARATION_REQUIRED"

    def __init__(self, project_id: str) -> None:
        super().__init__(
            f"Project {project_id!r} admits only declared uploads: send size_bytes and sha256 "
            "(lower-case hex) with CreateUploadUrl, upload_method PUT (not POST), and the PUT "
            "with the headers it returns.",
            violations=[
                FieldViolation("size_bytes", "is required by the project"),
                FieldViolation("sha256", "is required by the project"),
            ],
        )


class ServerBusy(ImageryError):
    """This server runs as many calls as it may: another replica, or this one a moment
    later, will answer."""

    reason = "SERVER_BUSY"

    def __init__(self, limit: int, retry_after: float) -> None:
        super().__init__(
            f"This server is running its maximum of {limit} calls at once: retry after "
            f"{retry_after:g} s, with backoff (another replica may answer at once).",
            metadata={"max_concurrent_rpcs": str(limit)},
        )
        self.retry_after = retry_after


class InvalidImageId(ImageryError):
    reason = "INVALID_IMAGE_ID"

    def __init__(self, field: str, indexes: Sequence[int] = ()) -> None:
        if indexes:
            super().__init__(
                f"{field}[{indexes[0]}] is not an image id: "
                "send the ids returned by CreateUploadUrl.",
                violations=[FieldViolation(f"{field}[{i}]", "not a ULID") for i in indexes[:10]],
            )
        else:
            super().__init__(
                f"{field} must be the 26-character id returned by CreateUploadUrl.",
                violations=[
                    FieldViolation(field, "not a ULID (26 characters of Crockford base32)")
                ],
            )


class UnsupportedContentType(ImageryError):
    reason = "UNSUPPORTED_CONTENT_TYPE"

    def __init__(self, content_type: str, allowed: Sequence[str]) -> None:
        names = ", ".join(allowed)
        shown = content_type[:100] or "(empty)"
        super().__init__(
            f"content_type {shown!r} is not accepted: send exactly one of {names}.",
            violations=[FieldViolation("content_type", f"must be exactly one of {names}")],
            metadata={"allowed": names},
        )


class InvalidFileName(ImageryError):
    reason = "INVALID_FILE_NAME"

    def __init__(self, problem: str, max_chars: int) -> None:
        super().__init__(
            f"file_name {problem}: send the original name, 1-{max_chars} printable characters.",
            violations=[FieldViolation("file_name", problem)],
        )


class NoImageIds(ImageryError):
    reason = "NO_IMAGE_IDS"

    def __init__(self, most: int) -> None:
        super().__init__(
            f"image_ids is empty: send between 1 and {most} ids.",
            violations=[FieldViolation("image_ids", f"must contain 1 to {most} ids")],
        )


class TooManyImageIds(ImageryError):
    reason = "TOO_MANY_IMAGE_IDS"

    def __init__(self, count: int, most: int) -> None:
        super().__init__(
            f"image_ids has {count} distinct ids: send at most {most} per call.",
            violations=[FieldViolation("image_ids", f"at most {most} distinct ids")],
        )


class UnknownVariant(ImageryError):
    reason = "UNKNOWN_VARIANT"

    @classmethod
    def not_configured(cls, variant: str, names: str) -> UnknownVariant:
        return cls(
            f"variant {variant[:50]!r} does not exist: ask for one of {names}.",
            violations=[FieldViolation("variant", f"must be one of {names}")],
            metadata={"available": names},
        )

    @classmethod
    def not_made(cls, image_id: str, variant: str, preference: str, names: str) -> UnknownVariant:
        return cls(
            f"Image {image_id} has no {preference} {variant!r} variant: ask for one of {names}.",
            violations=[FieldViolation("variant", f"this image has {names}")],
            metadata={"image_id": image_id, "available": names},
        )


class ImageNotFound(ImageryError):
    reason = "IMAGE_NOT_FOUND"

    def __init__(self, image_id: str) -> None:
        super().__init__(
            f"No image has id {image_id}: check the id returned by CreateUploadUrl.",
            metadata={"image_id": image_id},
        )


class RequestImageDeleted(ImageNotFound):
    """A CreateUploadUrl retried with its request id, whose image has been deleted since: the
    retry cannot answer it, and creates nothing."""

    def __init__(self, image_id: str, request_id: str) -> None:
        ImageryError.__init__(
            self,
            f"Image {image_id}, which request_id {request_id[:64]!r} created, has been deleted: "
            "send a new request_id to upload again.",
            metadata={"image_id": image_id, "request_id": request_id[:64]},
        )


class ImageNotReady(ImageryError):
    reason = "IMAGE_NOT_READY"

    def __init__(self, image_id: str, status: str) -> None:
        super().__init__(
            f"Image {image_id} is {status}, not ready: "
            "wait until GetImage reports READY, then ask again.",
            metadata={"image_id": image_id, "status": status},
        )


class ImageFailed(ImageryError):
    """The image ended FAILED: it will never be READY (its failure_reason says why)."""

    reason = "IMAGE_FAILED"

    def __init__(self, image_id: str, failure_reason: str) -> None:
        super().__init__(
            f"Image {image_id} failed ({failure_reason or 'no reason recorded'}) and will never "
            "be ready: upload the file again once the cause is fixed.",
            metadata={"image_id": image_id, "failure_reason": failure_reason},
        )


class ImageBlocked(ImageryError):
    """An operator took the image's bytes down: it is BLOCKED and is never served again."""

    reason = "BLOCKED"

    def __init__(self, image_id: str) -> None:
        super().__init__(
            f"Image {image_id} was taken down by an operator and will never be served: "
            "remove it from what you show (DeleteImage deletes its record).",
            metadata={"image_id": image_id},
        )


class RequestIdReused(ImageryError):
    reason = "REQUEST_ID_REUSED"

    def __init__(self, request_id: str) -> None:
        super().__init__(
            f"request_id {request_id!r} was used in the last 24 hours for a call with other "
            "fields: send a new request_id (a UUID) for a new request.",
            violations=[FieldViolation("request_id", "already used for a different request")],
            metadata={"request_id": request_id},
        )


class VariantPending(ImageryError):
    """A preset of the project's profile not rendered for the image yet; its rendering has
    been asked for (the profile's lazy policy is PENDING)."""

    reason = "VARIANT_PENDING"
    retry_after = 2.0

    def __init__(self, image_id: str, variant: str) -> None:
        super().__init__(
            f"Variant {variant!r} of image {image_id} is being rendered: retry after the "
            "RetryInfo delay (or ask for another variant meanwhile).",
            metadata={"image_id": image_id, "variant": variant},
        )


class ImageContentLost(ImageryError):
    """A READY image whose stored objects are gone (the reconciler marked its content lost)."""

    reason = "IMAGE_CONTENT_LOST"

    def __init__(self, image_id: str) -> None:
        super().__init__(
            f"Image {image_id} lost its stored bytes: upload the same file again to restore it.",
            metadata={"image_id": image_id},
        )


class ImageAlreadyExists(ImageryError):
    """An id was issued twice: never expected, since ids are random; the call may be retried."""

    reason = "IMAGE_ALREADY_EXISTS"


class Unauthenticated(ImageryError):
    """No usable credentials: the base of the four reasons a call is refused before anything
    else is looked at."""


class MissingCredentials(Unauthenticated):
    reason = "MISSING_CREDENTIALS"

    def __init__(self) -> None:
        super().__init__(
            "The call carries no credentials: send `authorization: Bearer <api key>` metadata "
            "or a client certificate."
        )


class InvalidCredentials(Unauthenticated):
    reason = "INVALID_CREDENTIALS"

    def __init__(self, problem: str = "is not a key imagery issued") -> None:
        super().__init__(
            f"The credentials {problem}: send the whole key shown when it was created "
            "(`imk_...`), as `authorization: Bearer <key>`."
        )


class KeyExpired(Unauthenticated):
    reason = "KEY_EXPIRED"

    def __init__(self, key_id: str) -> None:
        super().__init__(
            f"API key {key_id} has expired: ask a project admin for a new key.",
            metadata={"key_id": key_id},
        )


class KeyRevoked(Unauthenticated):
    reason = "KEY_REVOKED"

    def __init__(self, key_id: str, why: str = "was revoked") -> None:
        super().__init__(
            f"API key {key_id} {why}: ask a project admin for a new key.",
            metadata={"key_id": key_id},
        )


class MissingScope(ImageryError):
    reason = "MISSING_SCOPE"

    def __init__(self, scope: str, method: str) -> None:
        super().__init__(
            f"{method} needs the scope {scope!r}, which these credentials lack: "
            f"use a key created with {scope!r}.",
            metadata={"scope": scope, "method": method},
        )


class ProjectNotFound(ImageryError):
    reason = "PROJECT_NOT_FOUND"

    def __init__(self, name: str) -> None:
        super().__init__(
            f"No project is named {name[:100]!r}: list projects with ListProjects.",
            metadata={"project": name[:100]},
        )


class ProjectAlreadyExists(ImageryError):
    reason = "PROJECT_ALREADY_EXISTS"

    def __init__(self, project_id: str) -> None:
        super().__init__(
            f"Project {project_id!r} already exists (or was deleted and awaits purging): "
            "choose another project_id.",
            metadata={"project": project_id},
        )


class ProjectProtected(ImageryError):
    reason = "PROJECT_PROTECTED"

    def __init__(self, project_id: str) -> None:
        super().__init__(
            f"Project {project_id!r} is the operator project, which cannot be deleted: delete "
            "other projects, or revoke the operator keys you no longer need.",
            metadata={"project": project_id},
        )


class ProjectBeingPurged(ImageryError):
    reason = "PROJECT_BEING_PURGED"

    def __init__(self, project_id: str) -> None:
        super().__init__(
            f"Project {project_id!r} is being purged and can no longer be restored: create a "
            "new project and upload its images again.",
            metadata={"project": project_id},
        )


class ApiKeyNotFound(ImageryError):
    reason = "API_KEY_NOT_FOUND"

    def __init__(self, name: str) -> None:
        super().__init__(
            f"No API key is named {name[:150]!r}: list the project's keys with ListApiKeys.",
            metadata={"api_key": name[:150]},
        )


class InvalidArgument(ImageryError):
    """A field of a project or key request is malformed or beyond what is allowed; the
    violation names the field and the allowed values."""

    reason = "INVALID_ARGUMENT"

    def __init__(self, field: str, problem: str, fix: str) -> None:
        super().__init__(f"{field} {problem}: {fix}.", violations=[FieldViolation(field, problem)])


class SettingAboveCeiling(ImageryError):
    reason = "SETTING_ABOVE_CEILING"

    def __init__(self, field: str, value: object, ceiling: object) -> None:
        super().__init__(
            f"{field} = {value} is above this deployment's ceiling of {ceiling}: "
            f"choose at most {ceiling}, or ask the operators to raise the ceiling.",
            violations=[FieldViolation(field, f"at most {ceiling}")],
            metadata={"field": field, "ceiling": str(ceiling)},
        )


class FailureReason(StrEnum):
    """Why a processed upload ended FAILED (`Image.failure_reason`). These are ErrorReason
    values too, so clients get constants for them; they are never raised as call errors."""

    TOO_LARGE = "TOO_LARGE"
    EMPTY = "EMPTY"
    UNSUPPORTED_FORMAT = "UNSUPPORTED_FORMAT"
    CONTENT_TYPE_MISMATCH = "CONTENT_TYPE_MISMATCH"
    CORRUPT = "CORRUPT"
    DIMENSIONS_EXCEEDED = "DIMENSIONS_EXCEEDED"
    TOO_SMALL = "TOO_SMALL"
    UNPROCESSABLE = "UNPROCESSABLE"
    MEMORY_LIMIT = "MEMORY_LIMIT"
    CPU_LIMIT = "CPU_LIMIT"
    PROCESSING_TIMEOUT = "PROCESSING_TIMEOUT"
    PROCESSING_CRASHED = "PROCESSING_CRASHED"
    NOT_UPLOADED = "NOT_UPLOADED"
    RETRIES_EXHAUSTED = "RETRIES_EXHAUSTED"
    BLOCKED = "BLOCKED"  # the bytes were taken down (`imagery-admin block`)


# ErrorReason values no longer recorded; kept in the enum, which never loses a value.
RETIRED_REASONS: tuple[str, ...] = ("MISSING",)
