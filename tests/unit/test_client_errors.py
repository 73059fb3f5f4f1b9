"""imagery-client's exceptions: chosen by ErrorInfo.reason from the status details trailer,
by status code when the reason is unknown, with RetryInfo, BadRequest, QuotaFailure and
RequestInfo exposed. The statuses are built by the server's own error mapping, so the client
reads exactly what imagery sends."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from imagery.client import errors
from imagery.common import errors as server_errors
from imagery.common.grpc.errors import status_code_for, to_rpc_status
from imagery.v1 import errors_pb2

# ErrorReason values that are why an image ended FAILED (Image.failure_reason), never the
# reason of a failed call.
FAILURE_REASONS = {
    "TOO_LARGE",
    "MISSING",
    "EMPTY",
    "UNSUPPORTED_FORMAT",
    "CONTENT_TYPE_MISMATCH",
    "CORRUPT",
    "DIMENSIONS_EXCEEDED",
    "MEMORY_LIMIT",
    "CPU_LIMIT",
    "PROCESSING_TIMEOUT",
    "PROCESSING_CRASHED",
    "NOT_UPLOADED",
    "UNPROCESSABLE",
    "RETRIES_EXHAUSTED",
    "TOO_SMALL",
}


class FailedCall(grpc.RpcError):
    """What grpc raises for a failed call: code, details and trailers."""

    def __init__(self, code: grpc.StatusCode, details: str, trailers: Any = ()) -> None:
        self._code, self._details, self._trailers = code, details, trailers

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> Any:
        return self._trailers


def _sent(exc: server_errors.ImageryError) -> errors.ImageryError:
    """`exc` as the server sends it, read back by the client."""
    status = to_rpc_status(exc)
    return errors.from_rpc_error(FailedCall(status.code, status.details, status.trailing_metadata))


def _status(code: grpc.StatusCode, *details: Any) -> tuple[tuple[str, bytes], ...]:
    packed = []
    for detail in details:
        one = any_pb2.Any()
        one.Pack(detail)
        packed.append(one)
    status = status_pb2.Status(code=code.value[0], message="m", details=packed)
    return (("grpc-status-details-bin", status.SerializeToString()),)


def test_every_call_reason_has_its_own_exception_with_the_servers_status_code() -> None:
    reasons = {
        name.removeprefix("ERROR_REASON_")
        for name in errors_pb2.ErrorReason.keys()  # noqa: SIM118 (a protobuf enum wrapper)
    } - {"UNSPECIFIED"}
    call_reasons = reasons - FAILURE_REASONS
    assert call_reasons <= set(errors.BY_REASON), call_reasons - set(errors.BY_REASON)
    for server_class in _all_subclasses(server_errors.ImageryError):
        reason = server_class.reason
        if "reason" not in vars(server_class) or reason not in errors.BY_REASON:
            continue  # a base class, or a reason only the server knows
        client_class = errors.BY_REASON[reason]
        assert client_class.code_default == status_code_for(server_class.__new__(server_class))


def _all_subclasses(
    cls: type[server_errors.ImageryError],
) -> list[type[server_errors.ImageryError]]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_all_subclasses(sub)]
    return found


def test_a_reason_chooses_the_exception_and_keeps_what_the_server_said() -> None:
    error = _sent(server_errors.ImageNotReady("01M8V3JB6V38XGKQHBEKP3VZFZ", "pending"))
    assert type(error) is errors.ImageNotReady
    assert isinstance(error, errors.FailedPrecondition)
    assert error.code is grpc.StatusCode.FAILED_PRECONDITION
    assert error.reason == "IMAGE_NOT_READY"
    assert error.metadata == {"image_id": "01M8V3JB6V38XGKQHBEKP3VZFZ", "status": "pending"}
    assert error.image_id == "01M8V3JB6V38XGKQHBEKP3VZFZ"
    assert error.message.startswith("Image 01M8V3JB6V38XGKQHBEKP3VZFZ is pending")
    assert str(error).endswith("(FAILED_PRECONDITION IMAGE_NOT_READY)")
    assert error.retry_delay is None


def test_retry_delay_and_quota_violations_are_exposed() -> None:
    error = _sent(server_errors.RateLimited("projects/web", "create", 2, 60, retry_after=2.25))
    assert type(error) is errors.RateLimited
    assert isinstance(error, errors.ResourceExhausted)
    assert error.retry_delay == pytest.approx(2.25)
    assert error.metadata["limit"] == "2"
    assert error.quota_violations and error.quota_violations[0].subject == "projects/web"
    busy = _sent(server_errors.ServerBusy(200, retry_after=0.5))
    assert type(busy) is errors.ServerBusy and busy.retry_delay == pytest.approx(0.5)
    down = _sent(server_errors.DependencyUnavailable("The database cannot be reached."))
    assert type(down) is errors.DependencyUnavailable and isinstance(down, errors.Unavailable)
    assert down.retry_delay == pytest.approx(1.0)


def test_field_violations_are_exposed() -> None:
    error = _sent(server_errors.UnsupportedContentType("image/*", ("image/png", "image/jpeg")))
    assert type(error) is errors.UnsupportedContentType
    assert isinstance(error, errors.InvalidArgument)
    assert [v.field for v in error.field_violations] == ["content_type"]


def test_an_unknown_reason_falls_back_to_its_status_codes_family() -> None:
    info = error_details_pb2.ErrorInfo(reason="SOMETHING_NEWER", domain="imagery")
    trailers = _status(grpc.StatusCode.NOT_FOUND, info)
    error = errors.from_rpc_error(FailedCall(grpc.StatusCode.NOT_FOUND, "gone", trailers))
    assert type(error) is errors.NotFound
    assert error.reason == "SOMETHING_NEWER"


def test_a_reason_sent_with_another_code_than_its_own_is_taken_by_the_code() -> None:
    info = error_details_pb2.ErrorInfo(reason="IMAGE_NOT_FOUND", domain="imagery")
    trailers = _status(grpc.StatusCode.INTERNAL, info)
    error = errors.from_rpc_error(FailedCall(grpc.StatusCode.INTERNAL, "odd", trailers))
    assert type(error) is errors.Internal


def test_no_details_at_all_is_the_codes_family() -> None:
    error = errors.from_rpc_error(FailedCall(grpc.StatusCode.UNAVAILABLE, "connection refused"))
    assert type(error) is errors.Unavailable and error.reason == ""
    other = errors.from_rpc_error(FailedCall(grpc.StatusCode.UNIMPLEMENTED, "no such method"))
    assert type(other) is errors.ImageryError and other.code is grpc.StatusCode.UNIMPLEMENTED


def test_request_info_and_a_malformed_trailer() -> None:
    delay = duration_pb2.Duration(seconds=3, nanos=500_000_000)
    trailers = _status(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        error_details_pb2.ErrorInfo(reason="SERVER_BUSY", domain="imagery"),
        error_details_pb2.RetryInfo(retry_delay=delay),
        error_details_pb2.RequestInfo(request_id="trace-123"),
    )
    error = errors.from_rpc_error(FailedCall(grpc.StatusCode.RESOURCE_EXHAUSTED, "busy", trailers))
    assert type(error) is errors.ServerBusy
    assert error.retry_delay == pytest.approx(3.5) and error.request_id == "trace-123"
    garbage = (("grpc-status-details-bin", b"\xff\xff\xff"),)
    plain = errors.from_rpc_error(FailedCall(grpc.StatusCode.NOT_FOUND, "x", garbage))
    assert type(plain) is errors.NotFound


def test_another_domains_reason_is_not_taken_for_imagerys() -> None:
    info = error_details_pb2.ErrorInfo(reason="IMAGE_NOT_FOUND", domain="googleapis.com")
    trailers = _status(grpc.StatusCode.NOT_FOUND, info)
    error = errors.from_rpc_error(FailedCall(grpc.StatusCode.NOT_FOUND, "x", trailers))
    assert type(error) is errors.NotFound
