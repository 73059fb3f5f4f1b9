"""The shared gRPC bootstrap over a real socket: errors, health, reflection, limits, shutdown."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from imagery.common.errors import InvalidFileName
from imagery.common.grpc.server import GrpcServer
from imagery.v1 import upload_service_pb2 as pb
from imagery.v1 import upload_service_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration
SERVICE = "imagery.v1.UploadService"


class ScriptedUploadService(pb_grpc.UploadServiceServicer):
    """Raises what the test asks for through the file name."""

    async def CreateUploadUrl(
        self, request: pb.CreateUploadUrlRequest, context: Any
    ) -> pb.CreateUploadUrlResponse:
        if request.file_name == "invalid":
            raise InvalidFileName("is invalid", 255)
        if request.file_name == "crash":
            raise KeyError("secret-internal-detail")
        return pb.CreateUploadUrlResponse(image_id="ok", upload_url=request.file_name)

    async def DeleteImage(
        self, request: pb.DeleteImageRequest, context: Any
    ) -> pb.DeleteImageResponse:
        return pb.DeleteImageResponse()

    async def UpdateImage(
        self, request: pb.UpdateImageRequest, context: Any
    ) -> pb.UpdateImageResponse:
        return pb.UpdateImageResponse()


@pytest.fixture
async def server() -> AsyncIterator[GrpcServer]:
    from imagery.common.grpc.server import ServiceRegistration

    servicer = ScriptedUploadService()
    srv = GrpcServer(
        [
            ServiceRegistration(
                SERVICE, lambda s: pb_grpc.add_UploadServiceServicer_to_server(servicer, s)
            )
        ],
        grace_seconds=1,
    )
    await srv.start(0, host="127.0.0.1")
    yield srv
    await srv.stop()


@pytest.fixture
async def channel(server: GrpcServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        yield ch


async def test_domain_errors_arrive_as_rich_statuses(channel: grpc.aio.Channel) -> None:
    stub = pb_grpc.UploadServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateUploadUrl(pb.CreateUploadUrlRequest(file_name="invalid"))
    err = caught.value
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (
        err.details() == "file_name is invalid: send the original name, 1-255 printable characters."
    )
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None
    info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    assert status.details[0].Unpack(info) and status.details[1].Unpack(bad)
    assert (info.reason, info.domain) == ("INVALID_FILE_NAME", "imagery")
    assert bad.field_violations[0].field == "file_name"


async def test_unexpected_errors_are_internal_and_leak_nothing(
    channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    stub = pb_grpc.UploadServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateUploadUrl(pb.CreateUploadUrlRequest(file_name="crash"))
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert "secret-internal-detail" not in (caught.value.details() or "")
    assert "KeyError" not in (caught.value.details() or "")
    status = rpc_status.from_call(caught.value)  # type: ignore[arg-type]
    assert status is not None
    info = error_details_pb2.RequestInfo()
    assert any(d.Unpack(info) for d in status.details)
    # untraced here: the id the caller is told to report is the one the server logged
    (logged,) = [r for r in caplog.records if getattr(r, "request_id", None)]
    assert logged.request_id == info.request_id  # type: ignore[attr-defined]
    assert logged.exc_info is not None and "secret-internal-detail" in str(logged.exc_info[1])


async def test_large_requests_are_refused(channel: grpc.aio.Channel) -> None:
    stub = pb_grpc.UploadServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateUploadUrl(pb.CreateUploadUrlRequest(file_name="x" * 200_000))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    ok = await stub.CreateUploadUrl(pb.CreateUploadUrlRequest(file_name="fine"))
    assert ok.image_id == "ok"


async def test_health_per_service_and_overall(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", SERVICE):
        resp = await health.Check(health_pb2.HealthCheckRequest(service=name))
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await health.Check(health_pb2.HealthCheckRequest(service="imagery.v1.Nope"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_reflection_lists_the_services(channel: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def requests() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    async for resp in stub.ServerReflectionInfo(requests()):
        names = {s.name for s in resp.list_services_response.service}
        assert {SERVICE, "grpc.health.v1.Health"} <= names
        break


async def test_stopping_reports_not_serving_first(
    server: GrpcServer, channel: grpc.aio.Channel
) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    await server.health.enter_graceful_shutdown()
    resp = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE))
    assert resp.status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_reflection_can_be_switched_off_and_health_stays_open() -> None:
    from imagery.common.grpc.server import ServiceRegistration

    servicer = ScriptedUploadService()
    srv = GrpcServer(
        [
            ServiceRegistration(
                SERVICE, lambda s: pb_grpc.add_UploadServiceServicer_to_server(servicer, s)
            )
        ],
        grace_seconds=1,
        reflection_enabled=False,
    )
    await srv.start(0, host="127.0.0.1")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
            health = await health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service=SERVICE)
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            stream = reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")])
            )
            with pytest.raises(grpc.aio.AioRpcError) as off:
                async for _ in stream:
                    pass
            assert off.value.code() is grpc.StatusCode.UNIMPLEMENTED
    finally:
        await srv.stop()


async def test_a_health_port_serves_health_alone_for_probes() -> None:
    from imagery.common.grpc.server import ServiceRegistration

    servicer = ScriptedUploadService()
    srv = GrpcServer(
        [
            ServiceRegistration(
                SERVICE, lambda s: pb_grpc.add_UploadServiceServicer_to_server(servicer, s)
            )
        ],
        grace_seconds=1,
        health_port=0,
    )
    await srv.start(0, host="127.0.0.1")
    try:
        assert srv.health_port and srv.health_port != srv.port
        async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.health_port}") as ch:
            health = await health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service=SERVICE)
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.aio.AioRpcError) as elsewhere:
                await pb_grpc.UploadServiceStub(ch).CreateUploadUrl(
                    pb.CreateUploadUrlRequest(file_name="fine")
                )
            assert elsewhere.value.code() is grpc.StatusCode.UNIMPLEMENTED
        await srv.stop()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.health_port}") as ch:
            with pytest.raises(grpc.aio.AioRpcError):
                await health_pb2_grpc.HealthStub(ch).Check(
                    health_pb2.HealthCheckRequest(service=SERVICE), timeout=1
                )
    finally:
        await srv.stop()
