"""Servers that shed load, over real sockets and a real Postgres: past the concurrent-call cap
a call answers RESOURCE_EXHAUSTED with a retry delay at once (health still answers), a
connection is closed after its maximum age so clients find new pods, and a call that cannot
get a database connection in time answers UNAVAILABLE with a retry delay."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from imagery.common.db.images import PostgresImageRepository
from imagery.common.db.pool import create_pool
from imagery.common.errors import DependencyUnavailable
from imagery.common.grpc.errors import to_rpc_status
from imagery.common.grpc.server import GrpcServer, ServiceRegistration
from imagery.common.ids import new_image_id
from imagery.common.tenancy import DEFAULT_PROJECT
from imagery.v1 import upload_service_pb2 as pb
from imagery.v1 import upload_service_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration
SERVICE = "imagery.v1.UploadService"


class Held(pb_grpc.UploadServiceServicer):
    """CreateUploadUrl waits until released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = 0
        self.both_in = asyncio.Event()

    async def CreateUploadUrl(
        self, request: pb.CreateUploadUrlRequest, context: Any
    ) -> pb.CreateUploadUrlResponse:
        self.entered += 1
        if self.entered == 2:
            self.both_in.set()
        await self.release.wait()
        return pb.CreateUploadUrlResponse(image_id="ok")

    async def DeleteImage(
        self, request: pb.DeleteImageRequest, context: Any
    ) -> pb.DeleteImageResponse:
        return pb.DeleteImageResponse()

    async def UpdateImage(
        self, request: pb.UpdateImageRequest, context: Any
    ) -> pb.UpdateImageResponse:
        return pb.UpdateImageResponse()


def _server(servicer: Held, **limits: int) -> GrpcServer:
    registration = ServiceRegistration(
        SERVICE, lambda s: pb_grpc.add_UploadServiceServicer_to_server(servicer, s)
    )
    return GrpcServer([registration], grace_seconds=1, **limits)  # type: ignore[arg-type]


def _details(err: grpc.aio.AioRpcError) -> tuple[str, float]:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None
    info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
    for detail in status.details:
        if not detail.Unpack(info):
            detail.Unpack(retry)
    return info.reason, retry.retry_delay.ToMilliseconds() / 1000


async def test_calls_past_the_cap_are_refused_at_once_with_a_retry_delay() -> None:
    servicer = Held()
    server = _server(servicer, max_concurrent_rpcs=2)
    await server.start(0, host="127.0.0.1")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = pb_grpc.UploadServiceStub(channel)
            running = [
                asyncio.ensure_future(stub.CreateUploadUrl(pb.CreateUploadUrlRequest()))
                for _ in range(2)
            ]
            await asyncio.wait_for(servicer.both_in.wait(), timeout=5)
            with pytest.raises(grpc.aio.AioRpcError) as busy:
                await stub.CreateUploadUrl(pb.CreateUploadUrlRequest(), timeout=5)
            assert busy.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            reason, delay = _details(busy.value)
            assert reason == "SERVER_BUSY" and delay > 0
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest()
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING, "probes still pass"
            servicer.release.set()
            assert [r.image_id for r in await asyncio.gather(*running)] == ["ok", "ok"]
            assert (await stub.CreateUploadUrl(pb.CreateUploadUrlRequest())).image_id == "ok"
            assert server.interceptor.in_flight == 0
    finally:
        await server.stop()


async def test_connections_are_closed_after_their_maximum_age() -> None:
    servicer = Held()
    servicer.release.set()
    server = _server(servicer, max_connection_age_ms=1000, max_connection_age_grace_ms=200)
    await server.start(0, host="127.0.0.1")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            await pb_grpc.UploadServiceStub(channel).CreateUploadUrl(pb.CreateUploadUrlRequest())
            assert channel.get_state() is grpc.ChannelConnectivity.READY
            await asyncio.wait_for(
                channel.wait_for_state_change(grpc.ChannelConnectivity.READY), timeout=5
            )
            assert channel.get_state() is not grpc.ChannelConnectivity.READY, "the server went"
            again = await pb_grpc.UploadServiceStub(channel).CreateUploadUrl(
                pb.CreateUploadUrlRequest()
            )
            assert again.image_id == "ok", "and the client connects again by itself"
    finally:
        await server.stop()


async def test_a_call_that_cannot_get_a_database_connection_in_time_is_unavailable(
    database_url: str,
) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=1, acquire_timeout=0.2)
    try:
        async with pool.acquire():  # every connection busy
            started = time.monotonic()
            with pytest.raises(DependencyUnavailable) as unavailable:
                await PostgresImageRepository(pool).find_by_id(DEFAULT_PROJECT, new_image_id())
            assert time.monotonic() - started < 2, "it does not queue without bound"
        status = to_rpc_status(unavailable.value)
        assert status.code is grpc.StatusCode.UNAVAILABLE
        sent = status_pb2.Status.FromString(
            dict(status.trailing_metadata)["grpc-status-details-bin"]
        )
        retry = error_details_pb2.RetryInfo()
        assert any(d.Unpack(retry) for d in sent.details)
        assert retry.retry_delay.seconds >= 1
    finally:
        await pool.close()
