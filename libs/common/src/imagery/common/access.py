"""Wiring of who-may-call for a gRPC service: the credential store, the change bus that
keeps credential caches honest, and the authenticator. Called from each bootstrap."""

from __future__ import annotations

from contextlib import AsyncExitStack

import asyncpg

from imagery.common.config import Settings
from imagery.common.db.changes import ChangeBus
from imagery.common.db.projects import PostgresProjects
from imagery.common.grpc.auth import Authenticator


async def open_access(
    settings: Settings, pool: asyncpg.Pool, stack: AsyncExitStack
) -> tuple[Authenticator, ChangeBus]:
    """Start listening for changes and return the authenticator (subscribed) and the bus, for
    other caches to subscribe to. Both close when `stack` unwinds, before the pool."""
    bus = ChangeBus(settings.database_url)
    authenticator = Authenticator(
        PostgresProjects(pool),
        caching=lambda: bus.connected,
        forwarded_identity_header=settings.forwarded_identity_header,
    )
    bus.subscribe(authenticator)
    stack.push_async_callback(authenticator.close)
    await bus.start()
    stack.push_async_callback(bus.close)
    return authenticator, bus
