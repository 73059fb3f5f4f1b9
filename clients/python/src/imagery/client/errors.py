"""imagery's errors as typed exceptions.

A failed call carries a `google.rpc.Status` in its `grpc-status-details-bin` trailer: an
`ErrorInfo` whose `reason` names the condition (an `imagery.v1.ErrorReason` value without its
`ERROR_REASON_` prefix), and, where they apply, `RetryInfo`, `BadRequest`, `QuotaFailure` and
`RequestInfo`. `from_rpc_error` picks the exception class by that reason, and by the status
code when the reason is one this version does not know. Catch a family (`NotFound`,
`ResourceExhausted`, ...) or one condition (`ImageNotFound`, `RateLimited`, ...).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, NamedTuple

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

DETAILS_TRAILER = "grpc-status-details-bin"
ERROR_DOMAIN = "imagery"


class FieldViolation(NamedTuple):
    field: str
    description: str


class QuotaViolation(NamedTuple):
    subject: str
    description: str


class ImageryError(Exception):
    """A call to imagery failed. `code` is the gRPC status (None for errors raised outside
    gRPC, such as a refused upload PUT), `reason` the ErrorInfo reason ("" when the server sent
    none), `retry_delay` the server's RetryInfo delay in seconds (None: none given)."""

    code_default: ClassVar[grpc.StatusCode | None] = None
    reason_default: ClassVar[str] = ""

    def __init__(
        self,
        message: str = "",
        *,
        code: grpc.StatusCode | None = None,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
        retry_delay: float | None = None,
        field_violations: Iterable[FieldViolation] = (),
        quota_violations: Iterable[QuotaViolation] = (),
        request_id: str = "",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code if code is not None else self.code_default
        self.reason = reason if reason is not None else self.reason_default
        self.metadata: dict[str, str] = dict(metadata or {})
        self.retry_delay = retry_delay
        self.field_violations = tuple(field_violations)
        self.quota_violations = tuple(quota_violations)
        self.request_id = request_id

    @property
    def image_id(self) -> str | None:
        """The image the error is about, when the server named one."""
        return self.metadata.get("image_id")

    def __str__(self) -> str:
        parts = [self.code.name if self.code is not None else "", self.reason]
        tag = " ".join(p for p in parts if p)
        return f"{self.message} ({tag})" if tag else self.message


# One family per status code imagery answers with; each reason's class derives from its family.
class InvalidArgument(ImageryError):
    code_default = grpc.StatusCode.INVALID_ARGUMENT
    reason_default = "INVALID_ARGUMENT"


class NotFound(ImageryError):
    code_default = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ImageryError):
    code_default = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(ImageryError):
    code_default = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(ImageryError):
    code_default = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unauthenticated(ImageryError):
    code_default = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(ImageryError):
    code_default = grpc.StatusCode.PERMISSION_DENIED


class Unavailable(ImageryError):
    """The service or one of its dependencies cannot answer now: safe to retry with backoff
    (the client's service config already retried idempotent calls)."""

    code_default = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(ImageryError):
    code_default = grpc.StatusCode.DEADLINE_EXCEEDED


class Internal(ImageryError):
    code_default = grpc.StatusCode.INTERNAL
    reason_default = "INTERNAL"


class InvalidImageId(InvalidArgument):
    reason_default = "INVALID_IMAGE_ID"


class UnsupportedContentType(InvalidArgument):
    reason_default = "UNSUPPORTED_CONTENT_TYPE"


class InvalidFileName(InvalidArgument):
    reason_default = "INVALID_FILE_NAME"


class NoImageIds(InvalidArgument):
    reason_default = "NO_IMAGE_IDS"


class TooManyImageIds(InvalidArgument):
    reason_default = "TOO_MANY_IMAGE_IDS"


class UnknownVariant(InvalidArgument):
    reason_default = "UNKNOWN_VARIANT"


class RequestIdReused(InvalidArgument):
    reason_default = "REQUEST_ID_REUSED"


class SettingAboveCeiling(InvalidArgument):
    reason_default = "SETTING_ABOVE_CEILING"


class ImageNotFound(NotFound):
    reason_default = "IMAGE_NOT_FOUND"


class ProjectNotFound(NotFound):
    reason_default = "PROJECT_NOT_FOUND"


class ApiKeyNotFound(NotFound):
    reason_default = "API_KEY_NOT_FOUND"


class ProjectAlreadyExists(AlreadyExists):
    reason_default = "PROJECT_ALREADY_EXISTS"


class ImageNotReady(FailedPrecondition):
    reason_default = "IMAGE_NOT_READY"


class ImageFailed(FailedPrecondition):
    """The image ended FAILED and will never be READY; `failure_reason` says why (CORRUPT,
    TOO_LARGE, ...). `image` is the image as last seen, when the client saw it."""

    reason_default = "IMAGE_FAILED"

    def __init__(self, message: str = "", *, image: Any = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.image = image

    @property
    def failure_reason(self) -> str:
        return self.metadata.get("failure_reason", "")


class ImageBlocked(FailedPrecondition):
    """An operator took the image's bytes down: it is BLOCKED and will never be served.
    `image` is the image as last seen, when the client saw it."""

    reason_default = "BLOCKED"

    def __init__(self, message: str = "", *, image: Any = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.image = image


class ImageContentLost(FailedPrecondition):
    reason_default = "IMAGE_CONTENT_LOST"


class VariantPending(FailedPrecondition):
    """The variant is a preset of the project's profile not rendered for the image yet; it is
    being rendered: retry after `retry_delay`."""

    reason_default = "VARIANT_PENDING"


class DeclarationRequired(FailedPrecondition):
    reason_default = "DECLARATION_REQUIRED"


class ProjectProtected(FailedPrecondition):
    reason_default = "PROJECT_PROTECTED"


class ProjectBeingPurged(FailedPrecondition):
    reason_default = "PROJECT_BEING_PURGED"


class RateLimited(ResourceExhausted):
    """Past a rate limit: retry after `retry_delay`."""

    reason_default = "RATE_LIMITED"


class QuotaExceeded(ResourceExhausted):
    """A stored-images, stored-bytes or daily-uploads quota is used up: retrying will not
    help until images are deleted or the quota is raised. From WatchImage: the project holds
    its share of the replica's streams (`wait_ready` then polls GetImage instead)."""

    reason_default = "QUOTA_EXCEEDED"


class ServerBusy(ResourceExhausted):
    """The replica runs as many calls as it may: retry after `retry_delay`."""

    reason_default = "SERVER_BUSY"


class MissingCredentials(Unauthenticated):
    reason_default = "MISSING_CREDENTIALS"


class InvalidCredentials(Unauthenticated):
    reason_default = "INVALID_CREDENTIALS"


class KeyExpired(Unauthenticated):
    reason_default = "KEY_EXPIRED"


class KeyRevoked(Unauthenticated):
    reason_default = "KEY_REVOKED"


class MissingScope(PermissionDenied):
    reason_default = "MISSING_SCOPE"


class DependencyUnavailable(Unavailable):
    reason_default = "DEPENDENCY_UNAVAILABLE"


class ImageAlreadyExists(Internal):
    reason_default = "IMAGE_ALREADY_EXISTS"


class UploadFailed(ImageryError):
    """The HTTP PUT of the bytes was refused or could not be sent. `http_status` is the
    storage's answer (None when no answer came); `metadata["body"]` starts its error body."""

    reason_default = "UPLOAD_FAILED"

    def __init__(self, message: str = "", *, http_status: int | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.http_status = http_status


def _subclasses(cls: type[ImageryError]) -> list[type[ImageryError]]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


_FAMILIES = (
    InvalidArgument,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    ResourceExhausted,
    Unauthenticated,
    PermissionDenied,
    Unavailable,
    DeadlineExceeded,
    Internal,
)
BY_CODE: dict[grpc.StatusCode, type[ImageryError]] = {
    family.code_default: family for family in _FAMILIES if family.code_default is not None
}
BY_REASON: dict[str, type[ImageryError]] = {
    cls.reason_default: cls
    for cls in _subclasses(ImageryError)
    if cls.reason_default and cls is not UploadFailed
}


def error_for(
    code: grpc.StatusCode, message: str, status: status_pb2.Status | None
) -> ImageryError:
    """The typed exception for a failed call's code, message and decoded status details."""
    fields: dict[str, Any] = {}
    info = error_details_pb2.ErrorInfo()
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            delay = retry.retry_delay
            fields["retry_delay"] = delay.seconds + delay.nanos / 1e9
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields["field_violations"] = [
                FieldViolation(v.field, v.description) for v in bad.field_violations
            ]
        elif detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
            quota = error_details_pb2.QuotaFailure()
            detail.Unpack(quota)
            fields["quota_violations"] = [
                QuotaViolation(v.subject, v.description) for v in quota.violations
            ]
        elif detail.Is(error_details_pb2.RequestInfo.DESCRIPTOR):
            request = error_details_pb2.RequestInfo()
            detail.Unpack(request)
            fields["request_id"] = request.request_id
    cls = BY_REASON.get(info.reason) if info.domain in ("", ERROR_DOMAIN) else None
    if cls is None or cls.code_default not in (None, code):
        cls = BY_CODE.get(code, ImageryError)
    return cls(message, code=code, reason=info.reason, metadata=dict(info.metadata), **fields)


def decode_status(
    code: grpc.StatusCode, trailers: Iterable[tuple[str, str | bytes]] | None
) -> status_pb2.Status | None:
    """The `google.rpc.Status` in a call's trailers (None when absent, malformed, or for
    another code than the call's)."""
    for key, value in trailers or ():
        if key == DETAILS_TRAILER and isinstance(value, bytes):
            status = status_pb2.Status()
            try:
                status.ParseFromString(value)
            except DecodeError:  # a malformed trailer is no detail at all
                return None
            return status if status.code == code.value[0] else None
    return None


def from_rpc_error(error: grpc.RpcError) -> ImageryError:
    """The typed exception for a failed call (sync `grpc.RpcError` or `grpc.aio.AioRpcError`)."""
    call: Any = error
    code: grpc.StatusCode = call.code() if hasattr(call, "code") else grpc.StatusCode.UNKNOWN
    message: str = (call.details() if hasattr(call, "details") else None) or ""
    trailers = call.trailing_metadata() if hasattr(call, "trailing_metadata") else None
    return error_for(code, message, decode_status(code, trailers))
