from __future__ import annotations

import asyncio
import warnings
from collections.abc import AsyncIterator, Generator, Iterator

import asyncpg
import pytest

from imagery.common.config import AwsSettings, Settings
from imagery.devstack.aws import AwsResources
from imagery.devstack.fixtures import AwsServer, PostgresServer, RedisServer

# pytest-asyncio 1.5 asks asyncio.get_event_loop() for the "current" loop before each async
# test; when a sync test ran last, that call creates a loop nobody closes, and its
# ResourceWarning fails whichever test is running when it is collected (pytest-asyncio#724).
# Asking first, and keeping what it creates until the session ends, closes those loops.
_IMPLICIT_LOOPS: list[asyncio.AbstractEventLoop] = []


@pytest.hookimpl(tryfirst=True, wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, object, object]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        loop = asyncio.get_event_loop_policy().get_event_loop()
    if not loop.is_closed() and loop not in _IMPLICIT_LOOPS:
        _IMPLICIT_LOOPS.append(loop)
    return (yield)


def pytest_sessionfinish(session: pytest.Session) -> None:
    for loop in _IMPLICIT_LOOPS:
        if not loop.is_running() and not loop.is_closed():
            loop.close()


@pytest.fixture(scope="session")
async def postgres_server() -> AsyncIterator[PostgresServer]:
    server = PostgresServer.start()
    await server.prepare_template()
    yield server
    server.stop()


@pytest.fixture
async def database_url(postgres_server: PostgresServer) -> AsyncIterator[str]:
    """A fresh, migrated database for this test alone."""
    dsn = await postgres_server.new_database()
    yield dsn
    await postgres_server.drop_database(dsn)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=5)
    assert pool is not None
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
def aws_server() -> Iterator[AwsServer]:
    server = AwsServer.start()
    yield server
    server.stop()


@pytest.fixture
def aws(aws_server: AwsServer) -> AwsResources:
    """A bucket, queue and dead-letter queue of this test's own, wired like production."""
    return aws_server.new_resources()


@pytest.fixture
def aws_settings(aws: AwsResources) -> AwsSettings:
    return AwsSettings(region=aws.region, endpoint_url=aws.endpoint_url, bucket=aws.bucket)


@pytest.fixture
def settings(database_url: str, aws_settings: AwsSettings) -> Settings:
    return Settings(
        database_url=database_url,
        aws=aws_settings,
        grpc_port=0,
        log_level="info",
        log_format="json",
        max_upload_bytes=10 * 1024 * 1024,
        upload_url_expiry_seconds=300,
    )


@pytest.fixture
async def keys(database_url: str) -> dict[str, str]:
    """An admin key of the operator project (IMAGERY_ADMIN_KEY) and an ordinary key of the
    `default` project (IMAGERY_API_KEY), as `make run` makes them."""
    from imagery.devstack.credentials import local_keys

    return await local_keys(database_url)


@pytest.fixture
def api_key(keys: dict[str, str]) -> str:
    return keys["IMAGERY_API_KEY"]


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """A real Redis for this session: `REDIS_URL` if set, else `redis-server` on a free port."""
    try:
        server = RedisServer.start()
    except (RuntimeError, TimeoutError) as exc:
        pytest.fail(str(exc))
    yield server.url
    server.stop()
