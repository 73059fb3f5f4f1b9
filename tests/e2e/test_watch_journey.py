"""WatchImage as a client sees it: real upload, processor and delivery processes, real
Postgres and the local S3/SQS. A client watches its upload from before the PUT to READY and
the stream closes OK; a deleted image ends its stream NOT_FOUND; a replica serving as many
watchers as it may answers SERVER_BUSY with a retry delay; and streams cut by the
connection's maximum age are reopened and pick up the current state."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from imagery.devstack.aws import AwsResources
from imagery.devstack.pipeline import Pipeline, service_env
from imagery.devstack.procs import free_port
from imagery.devstack.services import ServiceProcess
from imagery.v1 import delivery_service_pb2 as dpb
from imagery.v1 import delivery_service_pb2_grpc as dgrpc
from imagery.v1 import image_pb2
from imagery.v1 import upload_service_pb2 as upb
from imagery.v1 import upload_service_pb2_grpc as ugrpc
from tests import images

pytestmark = pytest.mark.e2e
WAIT = 60.0  # against waiting forever (processing included), never a timing assertion
PENDING, PROCESSING, READY = (
    image_pb2.IMAGE_STATUS_PENDING,
    image_pb2.IMAGE_STATUS_PROCESSING,
    image_pb2.IMAGE_STATUS_READY,
)
Delivery = Callable[..., ServiceProcess]
EOF: object = grpc.aio.EOF  # type: ignore[attr-defined]  # in grpc.aio, not in its stubs


@pytest.fixture
def delivery(
    database_url: str, aws: AwsResources, cdn_env: dict[str, str], tmp_path: Path
) -> Iterator[Delivery]:
    """Start delivery processes with extra settings; all are stopped afterwards."""
    started: list[ServiceProcess] = []

    def start(**settings: str) -> ServiceProcess:
        env = {**service_env(database_url, aws), **cdn_env, **settings}
        log = tmp_path / f"delivery-{len(started)}.log"
        process = ServiceProcess("delivery", "imagery.delivery", free_port(), log, env, echo=None)
        started.append(process.start_ready())
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def pipeline(database_url: str, aws: AwsResources, tmp_path: Path) -> Pipeline:
    return Pipeline(database_url, aws, tmp_path)


def _auth(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


async def _create_upload(upload: ServiceProcess, key: str) -> upb.CreateUploadUrlResponse:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{upload.port}") as channel:
        ticket: upb.CreateUploadUrlResponse = await ugrpc.UploadServiceStub(
            channel
        ).CreateUploadUrl(
            upb.CreateUploadUrlRequest(content_type="image/jpeg", file_name="cat.jpg"),
            metadata=_auth(key),
        )
        return ticket


async def _put(ticket: upb.CreateUploadUrlResponse, body: bytes) -> None:
    async with httpx.AsyncClient() as http:
        put = await http.put(ticket.upload_url, content=body, headers=dict(ticket.required_headers))
    assert put.status_code == 200


def _watch(channel: grpc.aio.Channel, key: str, image_id: str) -> Any:
    return dgrpc.DeliveryServiceStub(channel).WatchImage(
        dpb.WatchImageRequest(image_id=image_id), metadata=_auth(key)
    )


async def _next(call: Any) -> image_pb2.Image | None:
    """The next state, or None once the stream has ended OK."""
    message = await asyncio.wait_for(call.read(), WAIT)
    return None if message is EOF else message.image


def _reason(err: grpc.aio.AioRpcError) -> tuple[str, float]:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None, err
    info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
    for detail in status.details:
        if not detail.Unpack(info):
            detail.Unpack(retry)
    return info.reason, retry.retry_delay.ToMilliseconds() / 1000


async def test_an_upload_watched_from_before_its_put_to_ready(
    upload_service: ServiceProcess, delivery: Delivery, pipeline: Pipeline, api_key: str
) -> None:
    processor = pipeline.processor()
    try:
        watcher = delivery()
        ticket = await _create_upload(upload_service, api_key)
        body = images.jpeg(64, 48)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{watcher.port}") as channel:
            call = _watch(channel, api_key, ticket.image_id)
            first = await _next(call)
            assert first is not None
            assert (first.image_id, first.status, first.file_name) == (
                ticket.image_id,
                PENDING,
                "cat.jpg",
            )
            await _put(ticket, body)
            seen = [first]
            while (state := await _next(call)) is not None:
                seen.append(state)
            assert await call.code() is grpc.StatusCode.OK
    finally:
        processor.stop()
    statuses = [s.status for s in seen]
    assert statuses in ([PENDING, PROCESSING, READY], [PENDING, READY]), statuses
    ready = seen[-1]
    assert (ready.width, ready.height) == (64, 48)
    assert ready.sha256 == hashlib.sha256(body).hexdigest()
    assert {v.name for v in ready.variants} >= {"thumbnail", "small"}


async def test_deleting_a_watched_image_ends_its_stream_not_found(
    upload_service: ServiceProcess, delivery: Delivery, api_key: str
) -> None:
    watcher = delivery()
    ticket = await _create_upload(upload_service, api_key)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{watcher.port}") as channel:
        call = _watch(channel, api_key, ticket.image_id)
        first = await _next(call)
        assert first is not None and first.status == PENDING
        async with grpc.aio.insecure_channel(f"127.0.0.1:{upload_service.port}") as uploads:
            deleted = await ugrpc.UploadServiceStub(uploads).DeleteImage(
                upb.DeleteImageRequest(image_id=ticket.image_id), metadata=_auth(api_key)
            )
        assert deleted.deleted
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await _next(call)
    assert ended.value.code() is grpc.StatusCode.NOT_FOUND
    assert _reason(ended.value)[0] == "IMAGE_NOT_FOUND"


async def test_a_full_replica_answers_server_busy_with_a_retry_delay(
    upload_service: ServiceProcess, delivery: Delivery, api_key: str
) -> None:
    watcher = delivery(DELIVERY_MAX_WATCHERS="2")
    ticket = await _create_upload(upload_service, api_key)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{watcher.port}") as channel:
        calls = [_watch(channel, api_key, ticket.image_id) for _ in range(2)]
        for call in calls:
            state = await _next(call)
            assert state is not None and state.status == PENDING
        with pytest.raises(grpc.aio.AioRpcError) as busy:
            await _next(_watch(channel, api_key, ticket.image_id))
        assert busy.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        reason, delay = _reason(busy.value)
        assert reason == "SERVER_BUSY" and delay > 0
        assert "2 image watchers" in (busy.value.details() or "")
        answer = await dgrpc.DeliveryServiceStub(channel).GetImage(
            dpb.GetImageRequest(image_id=ticket.image_id), metadata=_auth(api_key)
        )
        assert answer.image.status == PENDING, "calls are still served"
        for call in calls:
            call.cancel()


async def test_streams_cut_by_the_connection_age_are_reopened_until_ready(
    upload_service: ServiceProcess, delivery: Delivery, pipeline: Pipeline, api_key: str
) -> None:
    """Every connection is closed a second after it opens: the client reopens the stream
    each time (as a client would on UNAVAILABLE), and each reopened stream starts with the
    current state, until READY ends it OK."""
    watcher = delivery(GRPC_MAX_CONNECTION_AGE_MS="1000", GRPC_MAX_CONNECTION_AGE_GRACE_MS="0")
    ticket = await _create_upload(upload_service, api_key)
    seen: list[int] = []
    cuts = 0
    processor = None
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{watcher.port}") as channel:
            async with asyncio.timeout(WAIT):
                while not seen or seen[-1] != READY:
                    call = _watch(channel, api_key, ticket.image_id)
                    try:
                        while (state := await _next(call)) is not None:
                            seen.append(state.status)
                    except grpc.aio.AioRpcError as err:
                        if err.code() is not grpc.StatusCode.UNAVAILABLE:
                            raise
                        cuts += 1
                        if cuts == 2:  # cut at least twice while PENDING, then upload
                            processor = pipeline.processor()
                            await _put(ticket, images.jpeg())
            assert await call.code() is grpc.StatusCode.OK
    finally:
        if processor is not None:
            processor.stop()
    assert cuts >= 2
    assert seen[0] == PENDING and seen[-1] == READY
    assert seen == sorted(seen), f"states never go back: {seen}"
