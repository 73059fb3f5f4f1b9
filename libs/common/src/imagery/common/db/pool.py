"""asyncpg pool factory and driver-error translation, kept in one place.

Every pool reports, by the OpenTelemetry semantic conventions for database clients,
`db.client.connection.count{db.client.connection.state=idle|used}` and
`db.client.connection.pending_requests` (acquires waiting for a connection), under its
`db.client.connection.pool.name`; and `imagery.database.up`: 1 while a `SELECT 1` made every
PROBE_SECONDS answers within PROBE_TIMEOUT_SECONDS, else 0. The probe has a connection of
its own, outside the pool: a pool busy to its last connection is not a database down."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import weakref
from collections.abc import Callable, Coroutine, Iterable, Iterator
from typing import Any, ParamSpec, TypeVar

import asyncpg
from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from imagery.common.errors import DependencyUnavailable

P = ParamSpec("P")
DEFAULT_ACQUIRE_TIMEOUT_SECONDS = 2.0
PROBE_SECONDS = 15.0
PROBE_TIMEOUT_SECONDS = 5.0
R = TypeVar("R")


async def _rollback_if_needed(conn: asyncpg.Connection) -> None:
    """Pool release hook. asyncpg's default sends `RESET ALL; UNLISTEN *; CLOSE ALL; ...`
    on every release: one more round trip per query. imagery never keeps session state
    (no SET, LISTEN, session advisory locks or held cursors on pooled connections; the
    migration runner uses its own connection), so only a leaked transaction needs undoing."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


class _BoundedWaitPool(asyncpg.Pool):
    """A pool whose every acquire (also inside `fetch`, `execute`...) waits at most
    `acquire_timeout` seconds: when every connection is busy, a call fails fast as
    UNAVAILABLE with a retry delay instead of queueing without bound."""

    acquire_timeout: float | None = None
    name = "imagery"
    pending = 0  # acquires not yet answered
    up = 1
    _probe: asyncio.Task[None] | None = None

    def acquire(self, *, timeout: float | None = None) -> Any:
        return super().acquire(timeout=self.acquire_timeout if timeout is None else timeout)

    async def _acquire(self, timeout: float | None) -> Any:  # noqa: ASYNC109 (asyncpg's signature)
        # asyncpg bounds the wait with asyncio.wait_for, which on Python 3.11 runs the
        # acquisition as a task of its own: an extra event-loop round per query even when a
        # connection is idle. A deadline on the current task bounds it the same way.
        self.pending += 1
        try:
            if timeout is None:
                return await super()._acquire(None)  # type: ignore[misc]
            async with asyncio.timeout(timeout):
                return await super()._acquire(None)  # type: ignore[misc]
        finally:
            self.pending -= 1

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
        await super().close()

    def terminate(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
        super().terminate()

    async def probe(self, dsn: str) -> None:
        conn: asyncpg.Connection | None = None
        try:
            while not self.is_closing():
                try:
                    async with asyncio.timeout(PROBE_TIMEOUT_SECONDS):
                        if conn is None or conn.is_closed():
                            conn = await asyncpg.connect(
                                dsn, server_settings={"application_name": "imagery-probe"}
                            )
                        await conn.fetchval("SELECT 1")
                    self.up = 1
                except Exception:  # noqa: BLE001 - whatever it is, the database is not answering
                    self.up = 0
                    if conn is not None:
                        conn.terminate()
                        conn = None
                await asyncio.sleep(PROBE_SECONDS)
        finally:
            if conn is not None:
                conn.terminate()


_POOLS: weakref.WeakSet[_BoundedWaitPool] = weakref.WeakSet()


def _open_pools() -> list[_BoundedWaitPool]:
    return [pool for pool in list(_POOLS) if not pool.is_closing()]


def _connections(_: CallbackOptions) -> Iterable[Observation]:
    for pool in _open_pools():
        size, idle = pool.get_size(), pool.get_idle_size()
        name = {"db.client.connection.pool.name": pool.name}
        yield Observation(idle, {**name, "db.client.connection.state": "idle"})
        yield Observation(size - idle, {**name, "db.client.connection.state": "used"})


def _pending(_: CallbackOptions) -> Iterable[Observation]:
    for pool in _open_pools():
        yield Observation(pool.pending, {"db.client.connection.pool.name": pool.name})


def _up(_: CallbackOptions) -> Iterable[Observation]:
    for pool in _open_pools():
        yield Observation(pool.up, {"db.client.connection.pool.name": pool.name})


_METER = metrics.get_meter(__name__)
_METER.create_observable_up_down_counter(
    "db.client.connection.count",
    callbacks=[_connections],
    description="Connections of the pool by state (idle, used)",
)
_METER.create_observable_up_down_counter(
    "db.client.connection.pending_requests",
    callbacks=[_pending],
    description="Requests for a connection the pool has not answered yet",
)
_METER.create_observable_gauge(
    "imagery.database.up",
    callbacks=[_up],
    description="1 while Postgres answers the pool's probe (SELECT 1 every 15 s) within 5 s",
)


async def create_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    acquire_timeout: float | None = DEFAULT_ACQUIRE_TIMEOUT_SECONDS,
    name: str = "imagery",
    probe: bool = False,
) -> asyncpg.Pool:
    """Open a pool; fails with `DependencyUnavailable`, naming the problem, when Postgres
    cannot be reached. `name`: its `db.client.connection.pool.name` in the metrics; `probe`:
    whether it checks Postgres in the background for `imagery.database.up` (a service's pool
    does; a command's short-lived one need not)."""
    pool = _BoundedWaitPool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        max_queries=50_000,
        max_inactive_connection_lifetime=300.0,
        loop=None,
        connection_class=asyncpg.Connection,
        record_class=asyncpg.Record,
        command_timeout=30,
        reset=_rollback_if_needed,
        server_settings={"application_name": "imagery"},
    )
    pool.acquire_timeout = acquire_timeout
    pool.name = name
    try:
        await pool
    except (OSError, asyncpg.PostgresError) as exc:
        raise DependencyUnavailable(
            f"Cannot connect to Postgres ({type(exc).__name__}): check DATABASE_URL."
        ) from exc
    _POOLS.add(pool)
    if probe:
        pool._probe = asyncio.get_running_loop().create_task(pool.probe(dsn))
    return pool


# SQLSTATE classes that say "not now" rather than "never": connection exceptions (08),
# transaction rollbacks such as serialization failures and deadlocks (40), insufficient
# resources (53), operator intervention such as shutdown or "cannot connect now" (57),
# system errors (58); plus 55000 for a database that is not accepting connections.
_TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "57", "58"})
_TRANSIENT_SQLSTATES = frozenset({"55000"})


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the same work later may succeed. asyncpg reports a connection that the
    server terminated (failover, `pg_terminate_backend`, idle timeouts) as InterfaceError most
    of the time, but as InternalClientError ("cannot switch to state 12; another operation is
    in progress") when the termination lands mid-exchange: here, in about half the runs of
    a test that terminates a kept connection. Both mean this connection is gone."""
    if isinstance(
        exc,
        OSError
        | TimeoutError
        | asyncpg.exceptions.InterfaceError
        | asyncpg.exceptions.InternalClientError,
    ):
        return True
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(exc, asyncpg.PostgresError) and isinstance(sqlstate, str):
        return sqlstate[:2] in _TRANSIENT_SQLSTATE_CLASSES or sqlstate in _TRANSIENT_SQLSTATES
    return False


@contextlib.contextmanager
def postgres_errors() -> Iterator[None]:
    """Translate a transient driver failure into the domain's `DependencyUnavailable`; every
    Postgres adapter method runs inside it, so nothing above the adapters knows asyncpg."""
    try:
        yield
    except Exception as exc:
        if is_transient(exc):
            raise DependencyUnavailable(
                "The image database cannot be reached right now: retry with exponential backoff."
            ) from exc
        raise


def translates_postgres_errors(
    method: Callable[P, Coroutine[Any, Any, R]],
) -> Callable[P, Coroutine[Any, Any, R]]:
    """`postgres_errors()` around a whole adapter method."""

    @functools.wraps(method)
    async def translated(*args: P.args, **kwargs: P.kwargs) -> R:
        with postgres_errors():
            return await method(*args, **kwargs)

    return translated
