"""The benchmarks' baseline: a trivial echo RPC added to the real server under test, so it
runs through the same server, interceptor and event loop and costs nothing of ours beyond
what every RPC of that server pays. On a server that authenticates, that includes the
credential check: echo needs `images.read`, and its callers send the key the RPC under test
gets, so a ratio to echo is what the RPC itself costs on top of an authenticated call."""

from __future__ import annotations

from typing import Any

import grpc

from imagery.common.grpc.auth import METHOD_SCOPES
from imagery.common.grpc.server import GrpcServer
from imagery.common.tenancy import Scope

ECHO_METHOD = "/imagery.bench.Echo/Echo"


async def _echo(request: bytes, context: Any) -> bytes:
    return request


def add_echo(server: GrpcServer) -> None:
    METHOD_SCOPES.setdefault(ECHO_METHOD, Scope.IMAGES_READ)  # a scope, as each RPC has one
    server.server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "imagery.bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(_echo)}
            ),
        )
    )
