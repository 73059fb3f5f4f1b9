"""The real UploadService plus the echo RPC, for `bench.upload` (run as its own process)."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

from bench.echo import add_echo
from imagery.common.logs import configure_logging
from imagery.upload.bootstrap import build_server
from imagery.upload.config import load_settings


async def main() -> None:
    settings = load_settings()
    configure_logging("upload", settings.log_level, settings.log_format)
    async with AsyncExitStack() as stack:
        server = await build_server(settings, stack)
        add_echo(server)
        await server.start(settings.grpc_port, host="127.0.0.1")
        await server.serve_until_signal()


if __name__ == "__main__":
    asyncio.run(main())
