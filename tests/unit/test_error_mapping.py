from __future__ import annotations

from collections.abc import Callable

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.sdk.trace import TracerProvider

from imagery.common.db.pool import is_transient, postgres_errors
from imagery.common.errors import (
    DependencyUnavailable,
    ImageNotFound,
    ImageNotReady,
    ImageryError,
    UnsupportedContentType,
)
from imagery.common.grpc.errors import internal_status, to_rpc_status


def _details(status: grpc.Status) -> status_pb2.Status:
    raw = dict(status.trailing_metadata)["grpc-status-details-bin"]
    return status_pb2.Status.FromString(raw)


def _unpack(detail: status_pb2.Status, kind: type) -> list:  # type: ignore[type-arg]
    found = []
    for item in detail.details:
        message = kind()
        if item.Unpack(message):
            found.append(message)
    return found


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (UnsupportedContentType("text/html", ["image/png"]), grpc.StatusCode.INVALID_ARGUMENT),
        (ImageNotFound("01ARZ3NDEKTSV4RRFFQ69G5FAV"), grpc.StatusCode.NOT_FOUND),
        (
            ImageNotReady("01ARZ3NDEKTSV4RRFFQ69G5FAV", "pending"),
            grpc.StatusCode.FAILED_PRECONDITION,
        ),
        (DependencyUnavailable("db down"), grpc.StatusCode.UNAVAILABLE),
        (ImageryError("boom"), grpc.StatusCode.INTERNAL),
    ],
)
def test_each_domain_error_maps_to_its_canonical_code(
    error: ImageryError, code: grpc.StatusCode
) -> None:
    status = to_rpc_status(error)
    assert status.code == code
    detail = _details(status)
    assert detail.code == code.value[0]
    (info,) = _unpack(detail, error_details_pb2.ErrorInfo)
    assert info.domain == "imagery"
    assert info.reason == error.reason


def test_invalid_argument_carries_field_violations_and_metadata() -> None:
    error = UnsupportedContentType("text/html", ["image/png"])
    detail = _details(to_rpc_status(error))
    assert (
        detail.message == "content_type 'text/html' is not accepted: send exactly one of image/png."
    )
    (info,) = _unpack(detail, error_details_pb2.ErrorInfo)
    assert info.reason == "UNSUPPORTED_CONTENT_TYPE"
    assert dict(info.metadata) == {"allowed": "image/png"}
    (bad,) = _unpack(detail, error_details_pb2.BadRequest)
    assert [(v.field, v.description) for v in bad.field_violations] == [
        ("content_type", "must be exactly one of image/png")
    ]


def test_not_found_names_the_id_in_metadata() -> None:
    detail = _details(to_rpc_status(ImageNotFound("01ARZ3NDEKTSV4RRFFQ69G5FAV")))
    (info,) = _unpack(detail, error_details_pb2.ErrorInfo)
    assert info.metadata["image_id"] == "01ARZ3NDEKTSV4RRFFQ69G5FAV"


def test_internal_errors_never_show_their_own_message() -> None:
    status = to_rpc_status(ImageryError("password=hunter2 at db-7.internal"))
    assert "hunter2" not in status.details and "hunter2" not in _details(status).message
    assert status.details.startswith("imagery hit an internal error: retry, and report trace id")
    assert internal_status().code == grpc.StatusCode.INTERNAL


@pytest.mark.parametrize(
    "status",
    [lambda: to_rpc_status(ImageryError("boom")), internal_status],
    ids=["catalog", "unexpected"],
)
def test_internal_errors_carry_the_trace_id_to_report(status: Callable[[], grpc.Status]) -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("rpc") as span:
        made = status()
    trace_id = format(span.get_span_context().trace_id, "032x")
    (info,) = _unpack(_details(made), error_details_pb2.RequestInfo)
    assert info.request_id == trace_id
    assert f"report trace id {trace_id}" in made.details
    without_span = status()  # telemetry off: still an id to report, unique per failure
    (other,) = _unpack(_details(without_span), error_details_pb2.RequestInfo)
    assert len(other.request_id) == 32 and other.request_id in without_span.details


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (ConnectionRefusedError(), True),
        (TimeoutError(), True),
        (asyncpg.exceptions.CannotConnectNowError("starting up"), True),
        (asyncpg.exceptions.SerializationError("retry"), True),
        (asyncpg.exceptions.DeadlockDetectedError("retry"), True),
        (asyncpg.exceptions.AdminShutdownError("bye"), True),
        (asyncpg.exceptions.ObjectNotInPrerequisiteStateError("not accepting connections"), True),
        (asyncpg.exceptions.InterfaceError("connection is closed"), True),
        (asyncpg.exceptions.InternalClientError("cannot switch to state 12"), True),
        (asyncpg.exceptions.UniqueViolationError("dup"), False),
        (asyncpg.exceptions.UndefinedColumnError("bug"), False),
        (KeyError("bug"), False),
    ],
)
def test_transient_database_errors_are_told_apart_from_bugs(
    error: BaseException, transient: bool
) -> None:
    assert is_transient(error) is transient


def test_adapters_turn_transient_driver_failures_into_dependency_unavailable() -> None:
    with pytest.raises(DependencyUnavailable) as caught, postgres_errors():
        raise asyncpg.exceptions.AdminShutdownError("terminating connection")
    assert isinstance(caught.value.__cause__, asyncpg.exceptions.AdminShutdownError)
    with pytest.raises(asyncpg.exceptions.UndefinedColumnError), postgres_errors():
        raise asyncpg.exceptions.UndefinedColumnError("a bug stays a bug")


def test_log_lines_carry_the_current_trace_and_span_ids() -> None:
    import json
    import logging

    from opentelemetry.sdk.trace import TracerProvider

    from imagery.common.logs import JsonFormatter

    record = logging.LogRecord("imagery", logging.INFO, __file__, 1, "upload processed", None, None)
    outside = json.loads(JsonFormatter("processor").format(record))
    assert "trace_id" not in outside
    with TracerProvider().get_tracer("t").start_as_current_span("imagery.process_upload") as span:
        inside = json.loads(JsonFormatter("processor").format(record))
    assert inside["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert inside["span_id"] == format(span.get_span_context().span_id, "016x")
    assert inside["service"] == "processor"
