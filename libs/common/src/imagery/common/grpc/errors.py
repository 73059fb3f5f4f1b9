"""The one place domain errors become gRPC statuses (google.rpc.Status with ErrorInfo and,
for invalid arguments, BadRequest field violations)."""

from __future__ import annotations

import uuid

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from imagery.common import errors
from imagery.common.telemetry import current_trace_id

ERROR_DOMAIN = "imagery"


def _internal_message(request_id: str) -> str:
    return (
        f"imagery hit an internal error: retry, and report trace id {request_id} (also in the "
        "RequestInfo detail) if it persists."
    )


def report_id() -> str:
    """What the caller reports for an INTERNAL error: the trace id, which finds the logs; a
    random id when the call is not traced (the server logs it with the error)."""
    return current_trace_id() or uuid.uuid4().hex


# Every condition in the catalog and the status it answers with. A class missing here answers
# INTERNAL (its message hidden); tests/unit/test_error_catalog.py keeps the table complete.
STATUS_TABLE: dict[type[errors.ImageryError], grpc.StatusCode] = {
    errors.InvalidImageId: grpc.StatusCode.INVALID_ARGUMENT,
    errors.UnsupportedContentType: grpc.StatusCode.INVALID_ARGUMENT,
    errors.InvalidFileName: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NoImageIds: grpc.StatusCode.INVALID_ARGUMENT,
    errors.TooManyImageIds: grpc.StatusCode.INVALID_ARGUMENT,
    errors.UnknownVariant: grpc.StatusCode.INVALID_ARGUMENT,
    errors.ImageNotFound: grpc.StatusCode.NOT_FOUND,
    errors.ImageNotReady: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ImageContentLost: grpc.StatusCode.FAILED_PRECONDITION,
    errors.VariantPending: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ImageFailed: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ImageBlocked: grpc.StatusCode.FAILED_PRECONDITION,
    errors.RequestIdReused: grpc.StatusCode.INVALID_ARGUMENT,
    errors.DependencyUnavailable: grpc.StatusCode.UNAVAILABLE,
    errors.ServerBusy: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.RateLimited: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.QuotaExceeded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.DeclarationRequired: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ImageAlreadyExists: grpc.StatusCode.INTERNAL,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.MissingScope: grpc.StatusCode.PERMISSION_DENIED,
    errors.ProjectNotFound: grpc.StatusCode.NOT_FOUND,
    errors.ProjectAlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.ApiKeyNotFound: grpc.StatusCode.NOT_FOUND,
    errors.ProjectProtected: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ProjectBeingPurged: grpc.StatusCode.FAILED_PRECONDITION,
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.SettingAboveCeiling: grpc.StatusCode.INVALID_ARGUMENT,
}


def status_code_for(exc: errors.ImageryError) -> grpc.StatusCode:
    for kind in type(exc).__mro__:
        code = STATUS_TABLE.get(kind)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


def _pack(
    message: error_details_pb2.ErrorInfo
    | error_details_pb2.BadRequest
    | error_details_pb2.RetryInfo
    | error_details_pb2.QuotaFailure
    | error_details_pb2.RequestInfo,
) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def to_rpc_status(exc: errors.ImageryError, *, request_id: str | None = None) -> grpc.Status:
    """The rich status of `exc`; an INTERNAL one names `request_id` (by default `report_id()`)
    for the caller to report."""
    code = status_code_for(exc)
    details = [
        _pack(
            error_details_pb2.ErrorInfo(
                reason=exc.reason, domain=ERROR_DOMAIN, metadata=exc.metadata
            )
        )
    ]
    if code is grpc.StatusCode.INTERNAL:
        request_id = request_id or report_id()
        message = _internal_message(request_id)
        details.append(_pack(error_details_pb2.RequestInfo(request_id=request_id)))
    else:
        message = exc.message
    if exc.quota_violations:
        details.append(
            _pack(
                error_details_pb2.QuotaFailure(
                    violations=[
                        error_details_pb2.QuotaFailure.Violation(subject=subject, description=text)
                        for subject, text in exc.quota_violations
                    ]
                )
            )
        )
    if exc.retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(round(exc.retry_after * 1000))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    if exc.violations:
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field, description=v.description
                        )
                        for v in exc.violations
                    ]
                )
            )
        )
    status = status_pb2.Status(code=code.value[0], message=message, details=details)
    return rpc_status.to_status(status)


def internal_status(request_id: str | None = None) -> grpc.Status:
    """An unexpected failure: a generic message, and the id to report (by default
    `report_id()`) in the message and in a RequestInfo detail."""
    request_id = request_id or report_id()
    status = status_pb2.Status(
        code=code_pb2.INTERNAL,
        message=_internal_message(request_id),
        details=[
            _pack(error_details_pb2.ErrorInfo(reason="INTERNAL", domain=ERROR_DOMAIN)),
            _pack(error_details_pb2.RequestInfo(request_id=request_id)),
        ],
    )
    return rpc_status.to_status(status)
