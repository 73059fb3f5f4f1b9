"""The stack imagery-client's end-to-end tests talk to: the real upload, delivery and
processor processes and the CloudFront stand-in, on a database and bucket of their own,
started once for the package (every test uses images of its own, found by their ids or by
labels unique to the test)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import ExitStack
from dataclasses import dataclass

import pytest

from imagery.devstack.credentials import local_keys
from imagery.devstack.fixtures import AwsServer, PostgresServer
from imagery.devstack.pipeline import Pipeline, service_env
from imagery.devstack.procs import free_port
from imagery.devstack.services import ServiceProcess
from tests.keys import pem, private_key, public_pem


@dataclass(frozen=True)
class Stack:
    upload_address: str
    delivery_address: str
    api_key: str
    edge: str  # the CloudFront stand-in's base URL


@pytest.fixture(scope="package")
async def imagery_stack(
    postgres_server: PostgresServer, aws_server: AwsServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    dsn = await postgres_server.new_database()
    aws = aws_server.new_resources()
    keys = await local_keys(dsn)
    workdir = tmp_path_factory.mktemp("client-stack")
    key = private_key("ecdsa")
    (workdir / "cf-private.pem").write_bytes(pem(key))
    (workdir / "cf-public.pem").write_bytes(public_pem(key))
    edge_port = free_port()
    env = {
        **service_env(dsn, aws),
        "CLOUDFRONT_DOMAIN": f"http://127.0.0.1:{edge_port}",
        "CLOUDFRONT_KEY_PAIR_ID": "KTESTPAIR",
        "CLOUDFRONT_PRIVATE_KEY_FILE": str(workdir / "cf-private.pem"),
        "CLOUDFRONT_PUBLIC_KEY_FILE": str(workdir / "cf-public.pem"),
        "EDGE_PORT": str(edge_port),
    }
    with ExitStack() as running:
        upload, delivery = (
            running.enter_context(
                ServiceProcess(
                    name, f"imagery.{name}", free_port(), workdir / f"{name}.log", env, echo=None
                )
            )
            for name in ("upload", "delivery")
        )
        running.enter_context(
            ServiceProcess(
                "edge",
                "imagery.devstack.edge",
                edge_port,
                workdir / "edge.log",
                env,
                echo=None,
                grpc_health=False,
            )
        )
        processor = Pipeline(dsn, aws, workdir).processor()
        running.callback(processor.stop)
        yield Stack(
            f"127.0.0.1:{upload.port}",
            f"127.0.0.1:{delivery.port}",
            keys["IMAGERY_API_KEY"],
            f"http://127.0.0.1:{edge_port}",
        )
    await postgres_server.drop_database(dsn)
