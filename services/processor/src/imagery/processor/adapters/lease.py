"""Which one processor reports what is the same for all of them (the queues' counts, the
tables' sizes): the one holding a session advisory lock on a connection of its own, outside
the pool (a pooled connection never keeps session state). When that connection or its pod
goes away, Postgres drops the lock, and another processor takes it at its next try."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

log = logging.getLogger(__name__)
LEASE_KEY = 0x1A6E_7E57  # pg_advisory_lock key space is shared: the migrations use another
TRY_SECONDS = 15.0
# Postgres drops the lock with the session; these make it notice a vanished holder (a lost
# node, a partition) within about a minute instead of the OS's two hours of TCP keepalive.
_SESSION = {
    "application_name": "imagery-lease",
    "tcp_keepalives_idle": "30",
    "tcp_keepalives_interval": "10",
    "tcp_keepalives_count": "3",
    "tcp_user_timeout": "60000",
}


class PostgresLease:
    def __init__(self, dsn: str, *, key: int = LEASE_KEY, try_seconds: float = TRY_SECONDS) -> None:
        self._dsn = dsn
        self._key = key
        self._try_seconds = try_seconds
        self._conn: asyncpg.Connection | None = None
        self._leading = False

    def leading(self) -> bool:
        return self._leading

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop`: try to take the lock, or check that it is still held, every
        `try_seconds`; give it back at the end."""
        try:
            while not stop.is_set():
                await self._try()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._try_seconds)
        finally:
            await self._let_go()

    async def _try(self) -> None:
        try:
            if self._conn is None or self._conn.is_closed():
                self._leading = False
                self._conn = await asyncpg.connect(self._dsn, timeout=5, server_settings=_SESSION)
            if self._leading:
                await self._conn.fetchval("SELECT 1", timeout=5)
                return
            self._leading = bool(
                await self._conn.fetchval("SELECT pg_try_advisory_lock($1)", self._key, timeout=5)
            )
            if self._leading:
                log.info("this processor now reports the shared gauges (queues, tables)")
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            if self._leading:
                log.warning("lost the lease on the shared gauges", extra={"error": str(exc)})
            self._leading = False
            await self._let_go()

    async def _let_go(self) -> None:
        conn, self._conn, self._leading = self._conn, None, False
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 5)
