"""The real DeliveryService plus the trivial echo RPC, for `bench.delivery` (own process)."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

from bench.echo import add_echo
from imagery.common.logs import configure_logging
from imagery.delivery.bootstrap import build_server
from imagery.delivery.config import load_settings


async def main() -> None:
    settings = load_settings()
    configure_logging("delivery", settings.base.log_level, settings.base.log_format)
    async with AsyncExitStack() as stack:
        server = await build_server(settings, stack)
        add_echo(server)
        await server.start(settings.base.grpc_port, host="127.0.0.1")
        await server.serve_until_signal()


if __name__ == "__main__":
    asyncio.run(main())
