"""The change bus: one Postgres LISTEN connection per process, telling in-process caches what
changed (`key:<id>`, `identity:<id>`, `project:<id>`, `image:<id>`), whoever changed it.

A change is announced by `pg_notify` in the transaction that makes it, so it is delivered
when, and only if, that transaction commits. Postgres delivers it to every listening session
within milliseconds; the bus hands it to its subscribers at once.

The guarantee is bounded staleness: a cache acts on a committed change within
`STALENESS_BOUND_SECONDS` (tests/integration/test_change_bus.py holds every replica to it).
That holds while the connection is silent too: every `heartbeat_seconds` the bus notifies a
channel of its own and must hear the notice back within the same time, which proves that
notices still arrive (a stalled TCP connection, a pooler that drops LISTEN, a killed backend
all fail it). When it fails, or anything else goes wrong, every subscriber is reset (drops
what it cached) and `connected` is False until the bus listens again, so caches read from
Postgres meanwhile: a notice can be missed only while nobody relies on having heard it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Protocol

import asyncpg

from imagery.common.db.projects import CHANNEL

log = logging.getLogger(__name__)
HEARTBEAT_SECONDS = 0.4
STALENESS_BOUND_SECONDS = 1.0  # a heartbeat, its answer's wait, and delivery: < 1 s


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
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
        retry_seconds: float = 1.0,
    ) -> None:
        self._dsn = dsn
        self._heartbeat = heartbeat_seconds
        self._retry = retry_seconds
        self._subscribers: list[Subscriber] = []
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()
        self._echo_channel = f"imagery_bus_{uuid.uuid4().hex}"  # this process's alone
        self._echoes: dict[str, asyncio.Future[None]] = {}
        self.connected = False
        self.notices = 0
        self.heartbeats = 0  # round trips to Postgres, for the benchmark

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    async def start(self, *, wait: bool = True) -> None:
        """Start listening; with `wait`, return once listening (or after about two seconds:
        the bus keeps trying in the background and caches stay bypassed until it succeeds)."""
        self._task = asyncio.create_task(self._run(), name="change-bus")
        self._task.add_done_callback(lambda _: self._disconnected())
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
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - whatever broke it, caches stop trusting
                log.warning(
                    "change bus lost its connection; caches bypassed",
                    extra={"error": f"{type(exc).__name__}: {exc}"},
                )
            finally:
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
        await conn.add_listener(self._echo_channel, self._on_echo)
        await self._echo()  # notices arrive: only now is anything worth caching
        for subscriber in self._subscribers:  # anything cached before listening is suspect
            subscriber.reset()
        self.connected = True
        log.info("change bus listening", extra={"channel": CHANNEL})

    async def _watch(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), timeout=self._heartbeat)
            if self._lost.is_set():
                raise ConnectionError("the change bus connection was closed")
            await self._echo()

    async def _echo(self) -> None:
        """Notify our own channel and hear it back within one heartbeat, or raise."""
        assert self._conn is not None
        nonce = uuid.uuid4().hex
        heard = self._echoes[nonce] = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(self._heartbeat):
                await self._conn.execute("SELECT pg_notify($1, $2)", self._echo_channel, nonce)
                await heard
        finally:
            self._echoes.pop(nonce, None)
        self.heartbeats += 1

    def _on_echo(
        self,
        con_ref: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy,
        pid: int,
        channel: str,
        payload: object,
    ) -> None:
        heard = self._echoes.get(str(payload))
        if heard is not None and not heard.done():
            heard.set_result(None)

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
