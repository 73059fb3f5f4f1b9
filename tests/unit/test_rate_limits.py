"""Rate limits per project and RPC class, counted in process: past the limit a call is refused
with a retry delay and the limit named; other projects and classes are not touched; 0 is
unlimited; counters that cannot be reached let calls through."""

from __future__ import annotations

import dataclasses

import pytest

from imagery.common.errors import RateLimited
from imagery.common.grpc.rate_limits import RateLimits
from imagery.common.tenancy import KeyLimits, ProjectSettings
from tests.principals import CALLER, OTHER, policy

CREATE = "/imagery.v1.UploadService/CreateUploadUrl"
READ = "/imagery.v1.DeliveryService/GetImage"


async def test_past_the_limit_a_call_is_refused_with_a_delay_and_the_limit_named() -> None:
    limits = RateLimits(policy(project_rate_create_per_minute_default=3))
    for _ in range(3):
        await limits.check(CALLER, CREATE)
    with pytest.raises(RateLimited) as refused:
        await limits.check(CALLER, CREATE)
    error = refused.value
    assert 0 < (error.retry_after or 0) <= 60
    assert error.metadata == {
        "subject": "projects/default",
        "class": "create",
        "limit": "3",
        "window": "60s",
    }
    assert error.quota_violations == (("projects/default", "at most 3 create calls per 60 s"),)
    await limits.check(CALLER, READ)  # another class: unlimited by default
    await limits.check(OTHER, CREATE)  # another project: its own count


async def test_a_keys_own_limit_narrows_its_projects_and_spends_none_of_it() -> None:
    limits = RateLimits(policy(project_rate_create_per_minute_default=4))
    narrow = dataclasses.replace(CALLER, key_limits=KeyLimits(create=2))
    sibling = dataclasses.replace(CALLER, id="siblingkeysiblin")
    for _ in range(2):
        await limits.check(narrow, CREATE)
    for _ in range(3):
        with pytest.raises(RateLimited) as refused:
            await limits.check(narrow, CREATE)
    assert refused.value.metadata["subject"] == f"projects/default/apiKeys/{CALLER.id}"
    assert "create a key with a higher rate_create_per_minute" in refused.value.message
    await limits.check(sibling, CREATE)  # the project's count: 3 of 4, the refusals not in it
    await limits.check(sibling, CREATE)
    with pytest.raises(RateLimited) as project:
        await limits.check(sibling, CREATE)
    assert project.value.metadata["subject"] == "projects/default"
    await limits.check(narrow, READ)  # no key limit on reads


async def test_a_project_setting_overrides_the_default_and_zero_is_unlimited() -> None:
    limits = RateLimits(policy(project_rate_read_per_minute_default=1))
    unlimited = dataclasses.replace(CALLER, settings=ProjectSettings(rate_read_per_minute=0))
    for _ in range(50):
        await limits.check(unlimited, READ)
    one = dataclasses.replace(OTHER, settings=ProjectSettings(rate_read_per_minute=1))
    await limits.check(one, READ)
    with pytest.raises(RateLimited):
        await limits.check(one, READ)


async def test_counters_that_cannot_be_reached_let_calls_through() -> None:
    limits = RateLimits(
        policy(project_rate_create_per_minute_default=1), redis_url="redis://127.0.0.1:1/0"
    )
    for _ in range(3):
        await limits.check(CALLER, CREATE)  # no Redis on port 1: allowed, and a warning
    await limits.close()


async def test_a_redis_that_hangs_delays_one_call_then_is_skipped() -> None:
    """A listener that accepts and never answers: the first call waits the short timeout,
    the next ones go through at once."""
    import asyncio
    import time

    done = asyncio.Event()
    writers: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await done.wait()  # reads nothing, answers nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    limits = RateLimits(
        policy(project_rate_create_per_minute_default=1),
        redis_url=f"redis://127.0.0.1:{port}/0",
        timeout_seconds=0.2,
    )
    try:
        started = time.monotonic()
        await limits.check(CALLER, CREATE)
        first = time.monotonic() - started
        started = time.monotonic()
        for _ in range(20):
            await limits.check(CALLER, CREATE)
        rest = time.monotonic() - started
    finally:
        await limits.close()
        done.set()
        server.close()
        for writer in writers:
            writer.close()
            await writer.wait_closed()
        await server.wait_closed()
    assert first < 2, "bounded by the timeout, not the client's deadline"
    assert rest < first, "skipped while Redis is known to be down"


async def test_redis_urls_of_every_kind_are_accepted_and_others_refused() -> None:
    from imagery.common.config import ConfigError

    for url in ("redis://cache:6379/0", "rediss://cache:6380/0", "unix:///run/redis.sock"):
        await RateLimits(policy(), redis_url=url).close()
    with pytest.raises(ConfigError):
        RateLimits(policy(), redis_url="memcached://cache:11211")
