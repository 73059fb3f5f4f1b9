"""Fixtures the processor's integration tests share: the bucket through the processor's own
S3 adapter, and a real isolated job runner (two slots, warmed once per module)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from imagery.common.aws.clients import s3_client
from imagery.common.config import AwsSettings
from imagery.processor.adapters.isolation import IsolatedRunner, JobLimits
from imagery.processor.adapters.s3 import S3ObjectStore


@pytest.fixture(scope="module")
def runner() -> Iterator[IsolatedRunner]:
    runner = IsolatedRunner(2, JobLimits(memory_bytes=512 * 1024**2, cpu_seconds=5))
    runner.warm_up()
    yield runner
    runner.close()


@pytest.fixture
async def store(aws_settings: AwsSettings) -> AsyncIterator[S3ObjectStore]:
    async with s3_client(aws_settings) as client:
        yield S3ObjectStore(client, aws_settings.bucket)
