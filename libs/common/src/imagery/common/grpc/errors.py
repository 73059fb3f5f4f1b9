"""The one place domain errors become gRPC statuses (google.rpc.Status with ErrorInfo and,
for invalid arguments, BadRequest field violations)."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from imagery.common.errors import (
    FailedPrecondition,
    ImageryError,
    InvalidArgument,
    NotFound,
    Unavailable,
    Unimplemented,
)

ERROR_DOMAIN = "imagery"
INTERNAL_MESSAGE = "imagery hit an internal error: retry, and report the trace id if it persists."

# Checked in order; the first class the error is an instance of wins.
STATUS_TABLE: tuple[tuple[type[ImageryError], grpc.StatusCode], ...] = (
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
    (Unimplemented, grpc.StatusCode.UNIMPLEMENTED),
)


def status_code_for(exc: ImageryError) -> grpc.StatusCode:
    for error_type, code in STATUS_TABLE:
        if isinstance(exc, error_type):
            return code
    return grpc.StatusCode.INTERNAL


def _pack(message: error_details_pb2.ErrorInfo | error_details_pb2.BadRequest) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def to_rpc_status(exc: ImageryError) -> grpc.Status:
    code = status_code_for(exc)
    message = exc.message if code is not grpc.StatusCode.INTERNAL else INTERNAL_MESSAGE
    details = [
        _pack(
            error_details_pb2.ErrorInfo(
                reason=exc.reason, domain=ERROR_DOMAIN, metadata=exc.metadata
            )
        )
    ]
    if isinstance(exc, InvalidArgument) and exc.violations:
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


def internal_status() -> grpc.Status:
    status = status_pb2.Status(
        code=code_pb2.INTERNAL,
        message=INTERNAL_MESSAGE,
        details=[_pack(error_details_pb2.ErrorInfo(reason="INTERNAL", domain=ERROR_DOMAIN))],
    )
    return rpc_status.to_status(status)
