"""UploadService plus the echo RPC, for `bench.upload` (run as its own process): the
production build, or with `UNAUTHENTICATED_AS_KEY` set the same build without the credential
check (`bench.unauthenticated`)."""

from __future__ import annotations

import asyncio
import os
from contextlib import AsyncExitStack

from bench.echo import add_echo
from bench.unauthenticated import UNAUTHENTICATED_AS_KEY, as_key
from imagery.common.logs import configure_logging
from imagery.upload.bootstrap import build_server
from imagery.upload.config import load_settings


async def main() -> None:
    settings = load_settings()
    configure_logging("upload", settings.base.log_level, settings.base.log_format)
    async with AsyncExitStack() as stack:
        server = await build_server(
            settings, stack, authenticates=as_key(os.environ.get(UNAUTHENTICATED_AS_KEY))
        )
        add_echo(server)
        await server.start(settings.base.grpc_port, host="127.0.0.1")
        await server.serve_until_signal()


if __name__ == "__main__":
    asyncio.run(main())
