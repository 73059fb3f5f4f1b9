"""asyncpg pool factory and driver-error translation, kept in one place."""

from __future__ import annotations

import asyncpg

from imagery.common.errors import Unavailable


async def _rollback_if_needed(conn: asyncpg.Connection) -> None:
    """Pool release hook. asyncpg's default sends `RESET ALL; UNLISTEN *; CLOSE ALL; ...`
    on every release: one more round trip per query. imagery never keeps session state
    (no SET, LISTEN, session advisory locks or held cursors on pooled connections; the
    migration runner uses its own connection), so only a leaked transaction needs undoing."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """Open a pool; fails with `Unavailable` naming the problem when Postgres cannot be reached."""
    try:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            command_timeout=30,
            reset=_rollback_if_needed,
            server_settings={"application_name": "imagery"},
        )
    except (OSError, asyncpg.PostgresError) as exc:
        raise Unavailable(
            f"Cannot connect to Postgres ({type(exc).__name__}): check DATABASE_URL."
        ) from exc
    assert pool is not None
    return pool


TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.AdminShutdownError,
    TimeoutError,
)


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT_ERRORS)
