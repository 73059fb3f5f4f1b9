"""The benchmarks' baseline: a trivial echo RPC added to the real server under test, so it
runs through the same server, interceptor and event loop and costs nothing of ours."""

from __future__ import annotations

from typing import Any

import grpc

from imagery.common.grpc.server import GrpcServer

ECHO_METHOD = "/imagery.bench.Echo/Echo"


async def _echo(request: bytes, context: Any) -> bytes:
    return request


def add_echo(server: GrpcServer) -> None:
    server.server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "imagery.bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(_echo)}
            ),
        )
    )
