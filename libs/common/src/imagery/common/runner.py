"""`python -m imagery.<service>`: load settings, log, build, serve until SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from typing import Protocol, TypeVar

from imagery.common.config import ConfigError, Settings
from imagery.common.errors import DependencyUnavailable
from imagery.common.logs import configure_logging
from imagery.common.telemetry import configure_telemetry


def stop_on_signals() -> asyncio.Event:
    """An event set by the first SIGTERM or SIGINT this process receives."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


class Servable(Protocol):
    async def start(self, port: int, host: str = "[::]") -> int: ...

    async def serve_until_signal(self) -> None: ...


class ServiceSettings(Protocol):
    @property
    def base(self) -> Settings: ...


S = TypeVar("S", bound=ServiceSettings)


def run_service(
    name: str,
    load_settings: Callable[[Mapping[str, str] | None], S],
    build: Callable[[S, AsyncExitStack], Awaitable[Servable]],
) -> None:
    """Start one service process; configuration problems exit 2 with one readable line."""

    async def main() -> None:
        settings = load_settings(None)
        base = settings.base
        configure_logging(name, base.log_level, base.log_format)
        configure_telemetry(name, metrics_port=base.metrics_port)  # before any server exists
        async with AsyncExitStack() as stack:
            server = await build(settings, stack)
            await server.start(base.grpc_port)
            await server.serve_until_signal()

    try:
        asyncio.run(main())
    except (ConfigError, DependencyUnavailable) as exc:
        print(f"imagery {name}: cannot start: {exc}", file=sys.stderr)
        sys.exit(2)
