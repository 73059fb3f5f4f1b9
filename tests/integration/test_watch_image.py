"""WatchImage over a real socket of the real delivery server (built by its bootstrap) on a real
Postgres: the current state at once, each committed change as the change bus announces it,
the stream ending OK at READY and NOT_FOUND when the image or its project is deleted; the
edge's checks for a stream; the watcher cap (and watchers outside the call cap) and each
project's share of it; streams cut
by the connection's age or by shutdown; and, on the hub with the real bus, a READY whose
notice was lost still arriving, and a notice costing one read for all of an image's watchers."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from imagery.common.db.changes import ChangeBus
from imagery.common.db.image_states import PostgresImageStates
from imagery.common.db.images import PostgresImageRepository
from imagery.common.db.projects import PostgresProjects
from imagery.common.domain import ImageRecord, ImageStatus
from imagery.common.grpc.server import GrpcServer
from imagery.common.tenancy import DEFAULT_PROJECT, Actor, Project, ProjectSettings, Scope
from imagery.delivery.bootstrap import build_server
from imagery.delivery.config import load_settings
from imagery.delivery.watch import Key, Watchers, WatchImage
from imagery.devstack.aws import AwsResources
from imagery.devstack.fixtures import seed_record
from imagery.v1 import delivery_service_pb2 as pb
from imagery.v1 import delivery_service_pb2_grpc as pb_grpc
from imagery.v1 import image_pb2
from tests.keys import pem, private_key
from tests.principals import caller

pytestmark = pytest.mark.integration
WAIT = 10.0  # against waiting forever, never a timing assertion
PENDING, PROCESSING, READY = (
    image_pb2.IMAGE_STATUS_PENDING,
    image_pb2.IMAGE_STATUS_PROCESSING,
    image_pb2.IMAGE_STATUS_READY,
)
Serve = Callable[..., Awaitable[tuple[GrpcServer, str]]]
EOF: object = grpc.aio.EOF  # type: ignore[attr-defined]  # in grpc.aio, not in its stubs


@pytest.fixture
async def serve(database_url: str, aws: AwsResources, tmp_path: Path) -> AsyncIterator[Serve]:
    """Start delivery servers as production builds them, with these extra settings."""
    key_file = tmp_path / "cf.pem"
    key_file.write_bytes(pem(private_key("ecdsa")))
    base = {
        "DATABASE_URL": database_url,
        "AWS_REGION": aws.region,
        "AWS_ENDPOINT_URL": aws.endpoint_url,
        "S3_BUCKET": aws.bucket,
        "CLOUDFRONT_DOMAIN": "cdn.example",
        "CLOUDFRONT_KEY_PAIR_ID": "KTEST",
        "CLOUDFRONT_PRIVATE_KEY_FILE": str(key_file),
    }
    async with AsyncExitStack() as stack:

        async def start(**env: str) -> tuple[GrpcServer, str]:
            server = await build_server(load_settings({**base, **env}), stack)
            port = await server.start(0, host="127.0.0.1")
            stack.push_async_callback(server.stop)
            return server, f"127.0.0.1:{port}"

        yield start


def _watch(channel: grpc.aio.Channel, key: str | None, image_id: str) -> Any:
    metadata = () if key is None else (("authorization", f"Bearer {key}"),)
    return pb_grpc.DeliveryServiceStub(channel).WatchImage(
        pb.WatchImageRequest(image_id=image_id), metadata=metadata
    )


async def _read(call: Any) -> image_pb2.Image:
    message = await asyncio.wait_for(call.read(), WAIT)
    assert message is not EOF, f"the stream ended: {await call.code()}"
    image: image_pb2.Image = message.image
    return image


async def _ended(call: Any) -> tuple[str, str, str]:
    """(code, reason, message) the stream ends with, once nothing more arrives."""
    try:
        async with asyncio.timeout(WAIT):
            while await call.read() is not EOF:
                pass
    except grpc.aio.AioRpcError as err:
        return err.code().name, _details(err)[0], err.details() or ""
    assert await call.code() is grpc.StatusCode.OK
    return "OK", "", ""


def _details(err: grpc.aio.AioRpcError) -> tuple[str, float]:
    """The error's reason and retry delay (seconds; 0 without one)."""
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    if status is None:
        return "", 0.0
    info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
    for detail in status.details:
        if not detail.Unpack(info):
            detail.Unpack(retry)
    return info.reason, retry.retry_delay.ToMilliseconds() / 1000


async def _refusal(call: Any) -> tuple[str, str, float]:
    """(code, reason, retry delay in seconds) of a stream refused before its first message."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await asyncio.wait_for(call.read(), WAIT)
    return caught.value.code().name, *_details(caught.value)


async def _admitted(
    channel: grpc.aio.Channel, key: str, image_id: str
) -> tuple[Any, image_pb2.Image]:
    """A stream and its first state, asked again while the server answers RESOURCE_EXHAUSTED
    (SERVER_BUSY, QUOTA_EXCEEDED): the slot of a stream that just went may take a moment to be
    free."""
    deadline = time.monotonic() + WAIT
    while True:
        call = _watch(channel, key, image_id)
        try:
            return call, await _read(call)
        except grpc.aio.AioRpcError as err:
            if err.code() is not grpc.StatusCode.RESOURCE_EXHAUSTED or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.05)


async def _set_labels(pool: asyncpg.Pool, image_id: str, labels: str) -> None:
    await pool.execute(
        "UPDATE image_records SET labels = $2::jsonb, updated_at = now() WHERE id = $1",
        image_id,
        labels,
    )


async def test_the_current_state_then_each_change_until_ready_then_ok(
    serve: Serve, database_url: str, pool: asyncpg.Pool, api_key: str
) -> None:
    image_id = await seed_record(database_url, "pending")
    images = PostgresImageRepository(pool)
    _, target = await serve()
    async with grpc.aio.insecure_channel(target) as channel:
        call = _watch(channel, api_key, image_id)
        first = await _read(call)
        assert (first.image_id, first.status) == (image_id, PENDING)

        await images.update_status(image_id, ImageStatus.PROCESSING)  # as the processor does
        assert (await _read(call)).status == PROCESSING
        await _set_labels(pool, image_id, '{"team": "feed"}')  # as UpdateImage does
        labelled = await _read(call)
        assert (labelled.status, dict(labelled.labels)) == (PROCESSING, {"team": "feed"})
        await images.update_status(image_id, ImageStatus.READY)
        ready = await _read(call)
        assert (ready.status, dict(ready.labels)) == (READY, {"team": "feed"})
        assert await _ended(call) == ("OK", "", "")


async def test_an_image_ready_already_is_one_message(
    serve: Serve, database_url: str, api_key: str
) -> None:
    image_id = await seed_record(database_url, "failed", failure_reason="TOO_LARGE")
    _, target = await serve()
    async with grpc.aio.insecure_channel(target) as channel:
        call = _watch(channel, api_key, image_id)
        failed = await _read(call)
        assert (failed.status, failed.failure_reason) == (
            image_pb2.IMAGE_STATUS_FAILED,
            "TOO_LARGE",
        )
        assert await _ended(call) == ("OK", "", "")


async def test_a_deleted_image_ends_the_stream_not_found(
    serve: Serve, database_url: str, pool: asyncpg.Pool, api_key: str
) -> None:
    image_id = await seed_record(database_url, "pending")
    _, target = await serve()
    async with grpc.aio.insecure_channel(target) as channel:
        calls = [_watch(channel, api_key, image_id) for _ in range(3)]
        for call in calls:
            assert (await _read(call)).status == PENDING
        deleted = await PostgresImageRepository(pool).delete(
            DEFAULT_PROJECT, image_id, principal="key:test"
        )
        assert deleted is not None
        for call in calls:
            code, reason, message = await _ended(call)
            assert (code, reason) == ("NOT_FOUND", "IMAGE_NOT_FOUND")
            assert image_id in message


async def test_a_deleted_project_ends_its_streams_not_found(
    serve: Serve, database_url: str, pool: asyncpg.Pool
) -> None:
    projects, actor = PostgresProjects(pool), Actor("cli:test")
    await projects.create_project(
        Project("team-b", "Team B", ProjectSettings(), secrets.token_hex(16)), actor
    )
    key = await projects.bootstrap_key("team-b", actor, key_name="b", scopes=[Scope.IMAGES_READ])
    image_id = await seed_record(database_url, "processing", project_id="team-b")
    _, target = await serve()
    async with grpc.aio.insecure_channel(target) as channel:
        call = _watch(channel, key.secret, image_id)
        assert (await _read(call)).status == PROCESSING
        await projects.delete_project("team-b", actor, retention_seconds=3600)
        assert (await _ended(call))[:2] == ("NOT_FOUND", "IMAGE_NOT_FOUND")


async def test_a_stream_is_checked_like_any_call(
    serve: Serve, database_url: str, pool: asyncpg.Pool, api_key: str
) -> None:
    projects, actor = PostgresProjects(pool), Actor("cli:test")
    await projects.create_project(
        Project("team-b", "Team B", ProjectSettings(), secrets.token_hex(16)), actor
    )
    theirs = await projects.bootstrap_key("team-b", actor, key_name="b", scopes=list(Scope))
    no_read = await projects.bootstrap_key(
        DEFAULT_PROJECT, actor, key_name="w", scopes=[Scope.IMAGES_CREATE]
    )
    image_id = await seed_record(database_url, "pending")
    _, target = await serve()
    async with grpc.aio.insecure_channel(target) as channel:
        for key, watched, expected in (
            (None, image_id, ("UNAUTHENTICATED", "MISSING_CREDENTIALS")),
            (
                "imk_" + "a" * 16 + "_" + "b" * 43,
                image_id,
                ("UNAUTHENTICATED", "INVALID_CREDENTIALS"),
            ),
            (no_read.secret, image_id, ("PERMISSION_DENIED", "MISSING_SCOPE")),
            (theirs.secret, image_id, ("NOT_FOUND", "IMAGE_NOT_FOUND")),
            (api_key, "01" + "X" * 24, ("NOT_FOUND", "IMAGE_NOT_FOUND")),
            (api_key, "not-an-image-id", ("INVALID_ARGUMENT", "INVALID_IMAGE_ID")),
        ):
            code, reason, _ = await _refusal(_watch(channel, key, watched))
            assert (code, reason) == expected, (key, watched)


async def test_watchers_are_capped_apart_from_calls_and_a_cancelled_one_frees_its_slot(
    serve: Serve, database_url: str, api_key: str
) -> None:
    image_id = await seed_record(database_url, "pending")
    _, target = await serve(DELIVERY_MAX_WATCHERS="3", GRPC_MAX_CONCURRENT_RPCS="2")
    async with grpc.aio.insecure_channel(target) as channel:
        calls = [_watch(channel, api_key, image_id) for _ in range(3)]
        for call in calls:
            assert (await _read(call)).status == PENDING
        stub = pb_grpc.DeliveryServiceStub(channel)
        metadata = (("authorization", f"Bearer {api_key}"),)
        answers = await asyncio.gather(
            *(
                stub.GetImage(pb.GetImageRequest(image_id=image_id), metadata=metadata)
                for _ in range(2)
            )
        )
        assert [a.image.status for a in answers] == [PENDING, PENDING], "streams left room"

        code, reason, delay = await _refusal(_watch(channel, api_key, image_id))
        assert (code, reason) == ("RESOURCE_EXHAUSTED", "SERVER_BUSY")
        assert delay > 0

        calls.pop().cancel()  # the client goes away: its slot is free again
        call, first = await _admitted(channel, api_key, image_id)
        assert first.status == PENDING
        for open_call in [*calls, call]:
            open_call.cancel()


async def test_a_project_past_its_share_is_refused_while_another_project_watches(
    serve: Serve, database_url: str, pool: asyncpg.Pool, api_key: str
) -> None:
    projects, actor = PostgresProjects(pool), Actor("cli:test")
    await projects.create_project(
        Project("team-b", "Team B", ProjectSettings(), secrets.token_hex(16)), actor
    )
    theirs = await projects.bootstrap_key("team-b", actor, key_name="b", scopes=[Scope.IMAGES_READ])
    mine_id = await seed_record(database_url, "pending")
    theirs_id = await seed_record(database_url, "pending", project_id="team-b")
    _, target = await serve(DELIVERY_MAX_WATCHERS="10", DELIVERY_MAX_WATCHERS_PER_PROJECT="2")
    async with grpc.aio.insecure_channel(target) as channel:
        calls = [_watch(channel, api_key, mine_id) for _ in range(2)]
        for call in calls:
            assert (await _read(call)).status == PENDING

        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await asyncio.wait_for(_watch(channel, api_key, mine_id).read(), WAIT)
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        status = rpc_status.from_call(refused.value)  # type: ignore[arg-type]
        assert status is not None
        info, quota = error_details_pb2.ErrorInfo(), error_details_pb2.QuotaFailure()
        retry = error_details_pb2.RetryInfo()
        for detail in status.details:
            for message in (info, quota, retry):
                if detail.Unpack(message):
                    break
        assert (info.reason, dict(info.metadata)) == (
            "QUOTA_EXCEEDED",
            {"max_watchers_per_project": "2"},
        )
        assert [v.subject for v in quota.violations] == [f"projects/{DEFAULT_PROJECT}"]
        assert retry.retry_delay.ToMilliseconds() > 0

        other = _watch(channel, theirs.secret, theirs_id)
        assert (await _read(other)).image_id == theirs_id, "the other project is not starved"

        calls.pop().cancel()  # the client goes away: its project's slot is free again
        call, first = await _admitted(channel, api_key, mine_id)
        assert first.image_id == mine_id
        for open_call in [*calls, call, other]:
            open_call.cancel()


async def test_a_stream_cut_by_the_connection_age_is_resumed_from_the_current_state(
    serve: Serve, database_url: str, pool: asyncpg.Pool, api_key: str
) -> None:
    image_id = await seed_record(database_url, "pending")
    images = PostgresImageRepository(pool)
    _, target = await serve(
        GRPC_MAX_CONNECTION_AGE_MS="1000",
        GRPC_MAX_CONNECTION_AGE_GRACE_MS="0",
        DELIVERY_MAX_WATCHERS="1",  # a registration the cut stream kept would refuse the next
    )
    async with grpc.aio.insecure_channel(target) as channel:
        call = _watch(channel, api_key, image_id)
        assert (await _read(call)).status == PENDING
        code, _, _ = await _ended(call)
        assert code == "UNAVAILABLE", code  # cut: the client opens it again
        await images.update_status(image_id, ImageStatus.PROCESSING)  # while nobody watched

        again, resumed = await _admitted(channel, api_key, image_id)
        assert resumed.status == PROCESSING, "a reopened stream starts with the current state"
        await images.update_status(image_id, ImageStatus.READY)
        assert (await _read(again)).status == READY
        assert await _ended(again) == ("OK", "", "")


async def test_stopping_the_server_ends_its_streams_unavailable(
    serve: Serve, database_url: str, api_key: str
) -> None:
    image_id = await seed_record(database_url, "pending")
    server, target = await serve()
    async with grpc.aio.insecure_channel(target) as channel:
        call = _watch(channel, api_key, image_id)
        assert (await _read(call)).status == PENDING
        stopping = asyncio.ensure_future(server.stop())
        code, reason, message = await _ended(call)
        assert (code, reason) == ("UNAVAILABLE", "DEPENDENCY_UNAVAILABLE")
        assert "shutting down" in message
        await stopping


# The hub alone, on the real change bus and Postgres.


class CountingStates:
    """PostgresImageStates, counting its reads."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._states = PostgresImageStates(pool)
        self.reads: list[list[Key]] = []

    async def read_states(self, keys: Sequence[Key]) -> dict[Key, ImageRecord]:
        self.reads.append(list(keys))
        return await self._states.read_states(keys)


@pytest.fixture
async def hub(
    database_url: str, pool: asyncpg.Pool
) -> AsyncIterator[tuple[Watchers, ChangeBus, CountingStates]]:
    bus = ChangeBus(database_url, retry_seconds=0.05)
    states = CountingStates(pool)
    watchers = Watchers(
        states, listening=lambda: bus.connected, max_watchers=100, max_watchers_per_project=100
    )
    bus.subscribe(watchers)
    await bus.start()
    assert bus.connected
    watchers.start()
    yield watchers, bus, states
    await watchers.close()
    await bus.close()


async def test_a_notice_costs_one_read_for_all_of_an_images_watchers(
    hub: tuple[Watchers, ChangeBus, CountingStates], database_url: str, pool: asyncpg.Pool
) -> None:
    watchers, _, states = hub
    image_id = await seed_record(database_url, "pending")
    streams = [WatchImage(watchers)(caller(), image_id=image_id) for _ in range(50)]
    for stream in streams:
        assert (await asyncio.wait_for(anext(stream), WAIT)).status is ImageStatus.PENDING
    before = len(states.reads)
    await PostgresImageRepository(pool).update_status(image_id, ImageStatus.PROCESSING)
    for stream in streams:
        assert (await asyncio.wait_for(anext(stream), WAIT)).status is ImageStatus.PROCESSING
    assert len(states.reads) == before + 1
    for stream in streams:
        await stream.aclose()
    assert watchers.watchers == 0


async def test_a_ready_whose_notice_was_lost_still_arrives(
    hub: tuple[Watchers, ChangeBus, CountingStates], database_url: str, pool: asyncpg.Pool
) -> None:
    """The bus's backend stops answering (a frozen network path looks the same) and the
    READY is committed meanwhile: its notice goes nowhere, yet the watcher gets READY."""
    watchers, bus, _ = hub
    image_id = await seed_record(database_url, "processing")
    stream = WatchImage(watchers)(caller(), image_id=image_id)
    assert (await asyncio.wait_for(anext(stream), WAIT)).status is ImageStatus.PROCESSING
    pid = await pool.fetchval(
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'imagery-changes'"
    )
    os.kill(pid, signal.SIGSTOP)
    try:
        await PostgresImageRepository(pool).update_status(image_id, ImageStatus.READY)
        ready = await asyncio.wait_for(anext(stream), WAIT)
        assert ready.status is ImageStatus.READY
        assert bus.notices == 0, "it came from a read again, not from its notice"
    finally:
        os.kill(pid, signal.SIGCONT)
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
    assert watchers.watchers == 0
