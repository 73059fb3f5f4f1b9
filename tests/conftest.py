from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from imagery.common.config import AwsSettings, Settings
from imagery.devstack.aws import AwsResources
from imagery.devstack.fixtures import AwsServer, PostgresServer


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
