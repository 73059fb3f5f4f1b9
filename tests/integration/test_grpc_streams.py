"""Server-streaming methods at the shared gRPC edge, over a real socket: the same credential
check, principal, rate limit (a stream opened counts as one read call) and error mapping as a
unary call, before or after the first message; outside the cap on concurrent calls; and the
fail-closed scope check at start."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from imagery.common.errors import ImageNotFound, InvalidCredentials
from imagery.common.grpc.auth import METHOD_SCOPES, current_principal
from imagery.common.grpc.rate_limits import METHOD_CLASSES, RateLimits
from imagery.common.grpc.server import GrpcServer, ServiceRegistration, _require_scopes
from imagery.common.tenancy import Principal, Scope
from imagery.v1 import delivery_service_pb2 as pb
from imagery.v1 import delivery_service_pb2_grpc as pb_grpc
from imagery.v1 import image_pb2
from tests.principals import CALLER, policy

pytestmark = pytest.mark.integration
SERVICE = "imagery.v1.DeliveryService"
GOOD = (("authorization", "Bearer good"),)
WAIT = 10.0  # against waiting forever, never a timing assertion
EOF: object = grpc.aio.EOF  # type: ignore[attr-defined]  # in grpc.aio, not in its stubs


class OneKey:
    """Credentials: `Bearer good` is CALLER, anything else is refused."""

    async def authenticate(
        self, metadata: Mapping[str, str], peer_identity: str | Callable[[], str | None] | None
    ) -> Principal:
        if metadata.get("authorization") != "Bearer good":
            raise InvalidCredentials()
        return CALLER


class Scripted(pb_grpc.DeliveryServiceServicer):
    """WatchImage sends one image named for its caller, then does what the id says."""

    def __init__(self) -> None:
        self.closed = 0

    async def GetImage(self, request: pb.GetImageRequest, context: Any) -> pb.GetImageResponse:
        return pb.GetImageResponse(image=image_pb2.Image(image_id=request.image_id))

    async def GetDownloadUrl(self, request: Any, context: Any) -> Any:
        raise NotImplementedError  # only GetImage and WatchImage are called here

    async def BatchGetDownloadUrls(self, request: Any, context: Any) -> Any:
        raise NotImplementedError

    async def BatchGetImages(self, request: Any, context: Any) -> Any:
        raise NotImplementedError

    async def ListImages(self, request: Any, context: Any) -> Any:
        raise NotImplementedError

    async def WatchImage(
        self, request: pb.WatchImageRequest, context: Any
    ) -> AsyncIterator[pb.WatchImageResponse]:
        try:
            caller = current_principal().id
            yield pb.WatchImageResponse(image=image_pb2.Image(image_id="1", file_name=caller))
            if request.image_id == "gone":
                raise ImageNotFound("01J0000000000000000000000X")
            if request.image_id == "crash":
                raise KeyError("secret-internal-detail")
            if request.image_id == "hold":
                await asyncio.Event().wait()
        finally:
            self.closed += 1


@pytest.fixture
async def served() -> AsyncIterator[tuple[GrpcServer, Scripted, grpc.aio.Channel]]:
    servicer = Scripted()
    server = GrpcServer(
        [
            ServiceRegistration(
                SERVICE, lambda s: pb_grpc.add_DeliveryServiceServicer_to_server(servicer, s)
            )
        ],
        grace_seconds=1,
        authenticator=OneKey(),
        max_concurrent_rpcs=1,
        rate_limits=RateLimits(policy(project_rate_read_per_minute_default=8)),
    )
    port = await server.start(0, host="127.0.0.1")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield server, servicer, channel
    await server.stop()


def _watch(channel: grpc.aio.Channel, image_id: str, metadata: Any = GOOD) -> Any:
    return pb_grpc.DeliveryServiceStub(channel).WatchImage(
        pb.WatchImageRequest(image_id=image_id), metadata=metadata
    )


async def _drain(call: Any) -> None:
    async with asyncio.timeout(WAIT):
        while await call.read() is not EOF:
            pass


async def _failure(call: Any) -> tuple[grpc.StatusCode, str, dict[str, str], str]:
    """Read the stream to its end: (code, reason, metadata, message) of its error."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _drain(call)
    status = rpc_status.from_call(caught.value)  # type: ignore[arg-type]
    info = error_details_pb2.ErrorInfo()
    assert status is not None and status.details[0].Unpack(info)
    return caught.value.code(), info.reason, dict(info.metadata), caught.value.details() or ""


async def test_a_stream_is_checked_and_mapped_like_a_unary_call(
    served: tuple[GrpcServer, Scripted, grpc.aio.Channel],
) -> None:
    _, servicer, channel = served
    code, reason, _, _ = await _failure(_watch(channel, "ok", ()))
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS")

    call = _watch(channel, "gone")
    first = await asyncio.wait_for(call.read(), WAIT)
    assert first.image.file_name == CALLER.id, "the stream runs as its caller"
    code, reason, metadata, _ = await _failure(call)
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "IMAGE_NOT_FOUND")
    assert metadata == {"image_id": "01J0000000000000000000000X"}

    code, reason, _, message = await _failure(_watch(channel, "crash"))
    assert (code, reason) == (grpc.StatusCode.INTERNAL, "INTERNAL")
    assert "secret-internal-detail" not in message and "KeyError" not in message

    messages = [m async for m in _watch(channel, "ok")]
    assert [m.image.file_name for m in messages] == [CALLER.id]
    assert servicer.closed == 3, "each handler that ran was closed, whatever ended its stream"


async def test_streams_stay_outside_the_cap_on_concurrent_calls(
    served: tuple[GrpcServer, Scripted, grpc.aio.Channel],
) -> None:
    server, servicer, channel = served  # at most one call at a time
    held = [_watch(channel, "hold") for _ in range(3)]
    for call in held:
        assert (await asyncio.wait_for(call.read(), WAIT)).image.file_name == CALLER.id
    answer = await pb_grpc.DeliveryServiceStub(channel).GetImage(
        pb.GetImageRequest(image_id="x"), metadata=GOOD
    )
    assert answer.image.image_id == "x", "three open streams left room for a call"
    assert server.interceptor.in_flight == 0
    for call in held:
        call.cancel()
    deadline = time.monotonic() + WAIT
    while servicer.closed < 3:  # a client that goes away closes its stream's handler
        assert time.monotonic() < deadline, f"{servicer.closed} of 3 handlers closed"
        await asyncio.sleep(0.01)


async def test_opening_a_stream_counts_as_a_read_call(
    served: tuple[GrpcServer, Scripted, grpc.aio.Channel],
) -> None:
    _, _, channel = served  # 8 reads a minute
    stub = pb_grpc.DeliveryServiceStub(channel)
    for _ in range(4):
        await stub.GetImage(pb.GetImageRequest(image_id="x"), metadata=GOOD)
    for _ in range(4):
        assert len([m async for m in _watch(channel, "ok")]) == 1
    code, reason, metadata, _ = await _failure(_watch(channel, "ok"))
    assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
    assert metadata["class"] == "read"


def test_each_new_method_falls_in_its_rate_class() -> None:
    delivery, upload = "/imagery.v1.DeliveryService/", "/imagery.v1.UploadService/"
    assert {
        name: METHOD_CLASSES[name]
        for name in (
            f"{delivery}WatchImage",
            f"{delivery}BatchGetImages",
            f"{delivery}ListImages",
            f"{upload}UpdateImage",
        )
    } == {
        f"{delivery}WatchImage": "read",
        f"{delivery}BatchGetImages": "read",
        f"{delivery}ListImages": "read",
        f"{upload}UpdateImage": "create",
    }


def test_a_streaming_method_without_a_scope_stops_the_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _require_scopes([SERVICE])  # every method has its scope
    monkeypatch.delitem(METHOD_SCOPES, f"/{SERVICE}/WatchImage")
    with pytest.raises(RuntimeError, match="WatchImage is served without a scope"):
        _require_scopes([SERVICE])


def test_a_client_streaming_method_stops_the_start_even_with_a_scope(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from grpc_reflection.v1alpha import reflection_pb2  # noqa: F401 - its descriptors

    name = "grpc.reflection.v1alpha.ServerReflection"
    monkeypatch.setitem(METHOD_SCOPES, f"/{name}/ServerReflectionInfo", Scope.IMAGES_READ)
    with pytest.raises(RuntimeError, match="client-streaming methods need a guard"):
        _require_scopes([name])
