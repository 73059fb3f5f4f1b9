"""The change bus: one Postgres LISTEN connection per process, telling in-process caches what
changed (`key:<id>`, `identity:<id>`, `project:<id>`, `image:<id>`), whoever changed it.

A change is announced by `pg_notify` in the transaction that makes it, so it is delivered
when, and only if, that transaction commits. Postgres delivers it to every listening session
within milliseconds; the bus hands it to its subscribers at once.

The guarantee is bounded staleness: a cache acts on a committed change as soon as the notice
arrives (tests/integration/test_change_bus.py measures commit-to-eviction). When the
connection is lost, or a heartbeat goes unanswered for `heartbeat_seconds`, every subscriber
is reset (drops what it cached) and `connected` is False until the bus has listened again,
so caches read from Postgres meanwhile: a notice can be missed only while nobody relies on
having heard it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

import asyncpg

from imagery.common.db.projects import CHANNEL

log = logging.getLogger(__name__)


class Subscriber(Protocol):
    def changed(self, change: str) -> None:
        """One change notice, such as `key:abc` or `image:01H...`."""

    def reset(self) -> None:
        """Notices may have been missed: forget everything cached."""


class ChangeBus:
    def __init__(
        self,
        dsn: str,
        *,
        heartbeat_seconds: float = 5.0,
        retry_seconds: float = 1.0,
    ) -> None:
        self._dsn = dsn
        self._heartbeat = heartbeat_seconds
        self._retry = retry_seconds
        self._subscribers: list[Subscriber] = []
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()
        self.connected = False
        self.notices = 0

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    async def start(self, *, wait: bool = True) -> None:
        """Start listening; with `wait`, return once listening (or after the first failure:
        the bus keeps trying in the background and caches stay bypassed until it succeeds)."""
        self._task = asyncio.create_task(self._run(), name="change-bus")
        if wait:
            for _ in range(200):
                if self.connected or self._task.done():
                    break
                await asyncio.sleep(0.01)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._drop()

    async def _run(self) -> None:
        while True:
            try:
                await self._listen()
                await self._watch()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                log.warning(
                    "change bus lost its connection; caches bypassed", extra={"error": str(exc)}
                )
            self._disconnected()
            await self._drop()
            await asyncio.sleep(self._retry)

    async def _listen(self) -> None:
        self._lost.clear()
        conn = await asyncio.wait_for(
            asyncpg.connect(self._dsn, server_settings={"application_name": "imagery-changes"}),
            timeout=10,
        )
        self._conn = conn
        conn.add_termination_listener(lambda _conn: self._lost.set())
        await conn.add_listener(CHANNEL, self._on_notice)
        for subscriber in self._subscribers:  # anything cached before listening is suspect
            subscriber.reset()
        self.connected = True
        log.info("change bus listening", extra={"channel": CHANNEL})

    async def _watch(self) -> None:
        assert self._conn is not None
        while not self._lost.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), timeout=self._heartbeat)
                break
            await asyncio.wait_for(self._conn.fetchval("SELECT 1"), timeout=self._heartbeat)
        raise ConnectionError("the change bus connection was closed")

    def _on_notice(
        self,
        con_ref: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy,
        pid: int,
        channel: str,
        payload: object,
    ) -> None:
        self.notices += 1
        for subscriber in self._subscribers:
            subscriber.changed(str(payload))

    def _disconnected(self) -> None:
        self.connected = False
        for subscriber in self._subscribers:
            subscriber.reset()

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()
