"""The real UploadService, plus a trivial echo RPC on the same server, for the benchmark.

Run as its own process: `python -m bench.upload_server` with the usual settings in the
environment. The echo goes through the same server, interceptor and event loop, so the
ratio CreateUploadUrl / echo shows what our code costs beyond gRPC itself."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import Any

import grpc

from imagery.common.logs import configure_logging
from imagery.upload.bootstrap import build_server
from imagery.upload.config import load_settings

ECHO_METHOD = "/imagery.bench.Echo/Echo"


async def _echo(request: bytes, context: Any) -> bytes:
    return request


async def main() -> None:
    settings = load_settings()
    configure_logging("upload", settings.log_level, settings.log_format)
    async with AsyncExitStack() as stack:
        server = await build_server(settings, stack)
        server.server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "imagery.bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(_echo)}
                ),
            )
        )
        await server.start(settings.grpc_port, host="127.0.0.1")
        await server.serve_until_signal()


if __name__ == "__main__":
    asyncio.run(main())
