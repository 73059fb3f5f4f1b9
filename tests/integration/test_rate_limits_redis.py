"""Rate limits over a real Redis and a real gRPC socket: two replicas share one project's
limit, and the call past it answers RESOURCE_EXHAUSTED `RATE_LIMITED` with a RetryInfo delay
and a QuotaFailure naming the limit."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from imagery.common.config import Settings
from imagery.common.errors import RateLimited
from imagery.common.grpc.rate_limits import RateLimits
from imagery.common.tenancy import ProjectSettings
from imagery.upload.bootstrap import build_server
from imagery.upload.config import UploadSettings
from imagery.v1 import project_pb2
from imagery.v1 import project_service_pb2 as ppb
from imagery.v1 import project_service_pb2_grpc as ppb_grpc
from imagery.v1 import upload_service_pb2 as pb
from imagery.v1 import upload_service_pb2_grpc as pb_grpc
from tests import grpc_auth
from tests.principals import CALLER, policy

pytestmark = pytest.mark.integration
CREATE = "/imagery.v1.UploadService/CreateUploadUrl"


async def test_two_replicas_share_one_projects_limit(redis_server: str) -> None:
    caller = dataclasses.replace(
        CALLER,
        project_id=f"p-{uuid.uuid4().hex[:8]}",
        settings=ProjectSettings(rate_create_per_minute=5),
    )
    replicas = [RateLimits(policy(), redis_server) for _ in range(2)]
    allowed = refused = 0
    for i in range(10):
        try:
            await replicas[i % 2].check(caller, CREATE)
            allowed += 1
        except RateLimited:
            refused += 1
    for replica in replicas:
        await replica.close()
    assert (allowed, refused) == (5, 5), "five in all, whichever replica answered"


async def test_a_high_limit_is_counted_in_batches_and_never_exceeded(redis_server: str) -> None:
    import redis.asyncio

    caller = dataclasses.replace(
        CALLER,
        project_id=f"p-{uuid.uuid4().hex[:8]}",
        settings=ProjectSettings(rate_create_per_minute=1000),  # batches of 10
    )
    replicas = [RateLimits(policy(), redis_server) for _ in range(2)]
    client = redis.asyncio.Redis.from_url(redis_server)
    before = await _script_calls(client)
    for i in range(900):
        await replicas[i % 2].check(caller, CREATE)
    round_trips = await _script_calls(client) - before
    allowed = 900
    for i in range(300):
        try:
            await replicas[i % 2].check(caller, CREATE)
            allowed += 1
        except RateLimited:
            pass
    for replica in replicas:
        await replica.close()
    await client.aclose()
    assert 1000 - 2 * 15 <= allowed <= 1000, "never past the limit, at most 1.5 batches early"
    assert round_trips <= 100, f"{round_trips} round trips for 900 calls, not one each"


async def _script_calls(client: Any) -> int:
    stats = await client.info("commandstats")
    return sum(v["calls"] for k, v in stats.items() if k.startswith("cmdstat_eval"))


@pytest.fixture
async def upload_target(settings: Settings, redis_server: str) -> AsyncIterator[str]:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(redis_server)
    try:  # counters of an earlier run against the same REDIS_URL
        stale = [key async for key in client.scan_iter(match="LIMITS*")]
        if stale:
            await client.delete(*stale)
    finally:
        await client.aclose()
    limited = dataclasses.replace(
        settings,
        redis_url=redis_server,
        projects=policy(project_rate_create_per_minute_default=2),
    )
    async with AsyncExitStack() as stack:
        server = await build_server(UploadSettings(limited, 3600), stack)
        port = await server.start(0, host="127.0.0.1")
        yield f"127.0.0.1:{port}"
        await server.stop()


async def test_the_call_past_the_limit_says_which_limit_and_when_to_retry(
    upload_target: str, api_key: str
) -> None:
    async with grpc_auth.channel(upload_target, api_key) as channel:
        stub = pb_grpc.UploadServiceStub(channel)
        request = pb.CreateUploadUrlRequest(content_type="image/png", file_name="a.png")
        for _ in range(2):
            assert (await stub.CreateUploadUrl(request)).image_id
        with pytest.raises(grpc.aio.AioRpcError) as limited:
            await stub.CreateUploadUrl(request)
    assert limited.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    status = rpc_status.from_call(limited.value)  # type: ignore[arg-type]
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    retry = error_details_pb2.RetryInfo()
    quota = error_details_pb2.QuotaFailure()
    for detail in status.details:
        if not detail.Unpack(info) and not detail.Unpack(retry):
            detail.Unpack(quota)
    assert info.reason == "RATE_LIMITED"
    assert (info.metadata["class"], info.metadata["limit"], info.metadata["window"]) == (
        "create",
        "2",
        "60s",
    )
    assert 0 < retry.retry_delay.ToMilliseconds() <= 60_000
    assert [(v.subject, v.description) for v in quota.violations] == [
        ("projects/default", "at most 2 create calls per 60 s")
    ]


async def test_a_keys_own_limit_is_set_at_creation_shown_and_enforced(
    upload_target: str, keys: dict[str, str]
) -> None:
    parent = "projects/default"
    async with grpc_auth.channel(upload_target, keys["IMAGERY_ADMIN_KEY"]) as admin:
        projects = ppb_grpc.ProjectServiceStub(admin)
        made = await projects.CreateApiKey(
            ppb.CreateApiKeyRequest(
                parent=parent,
                api_key=project_pb2.ApiKey(
                    display_name="batch job", scopes=["images.create"], rate_create_per_minute=1
                ),
            )
        )
        listed = await projects.ListApiKeys(ppb.ListApiKeysRequest(parent=parent))
        with pytest.raises(grpc.aio.AioRpcError) as above:
            await projects.CreateApiKey(
                ppb.CreateApiKeyRequest(
                    parent=parent,
                    api_key=project_pb2.ApiKey(
                        display_name="too fast", scopes=["images.read"], rate_read_per_minute=-1
                    ),
                )
            )
    assert made.api_key.rate_create_per_minute == 1
    shown = [k for k in listed.api_keys if k.name == made.api_key.name]
    assert shown[0].rate_create_per_minute == 1 and not shown[0].HasField("rate_read_per_minute")
    assert above.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    async with grpc_auth.channel(upload_target, made.key) as channel:
        stub = pb_grpc.UploadServiceStub(channel)
        request = pb.CreateUploadUrlRequest(content_type="image/png", file_name="a.png")
        await stub.CreateUploadUrl(request)
        with pytest.raises(grpc.aio.AioRpcError) as limited:
            await stub.CreateUploadUrl(request)
    assert limited.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    key_id = made.api_key.name.rsplit("/", 1)[1]
    assert f"projects/default/apiKeys/{key_id} made more than 1 create" in (
        limited.value.details() or ""
    )
