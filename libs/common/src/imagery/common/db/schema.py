"""A service starts serving only on the schema it was built for: every migration bundled
with it (imagery.common.db.migrations) applied. A rollout may start new pods while the
migration Job still runs (plain `kubectl apply`, Flux without dependsOn): they wait here,
not ready, and the old pods keep serving; past the wait they exit naming what to run.

Migrations are additive (expand, then contract in a later release), so a database ahead of
the code, after a rollback of the pods, is fine."""

from __future__ import annotations

import asyncio
import logging
import time

import asyncpg

from imagery.common.config import ConfigError
from imagery.common.db.migrate import load_migrations

log = logging.getLogger(__name__)
POLL_SECONDS = 5.0


async def pending_migrations(pool: asyncpg.Pool) -> list[int]:
    """The bundled migrations' versions the database has not applied, in order."""
    wanted = {m.version for m in load_migrations()}
    try:
        rows = await pool.fetch("SELECT version FROM schema_migrations")
    except asyncpg.UndefinedTableError:  # not even the first migration ran
        rows = []
    return sorted(wanted - {row["version"] for row in rows})


async def wait_for_schema(
    pool: asyncpg.Pool, *, timeout_seconds: float, poll_seconds: float = POLL_SECONDS
) -> None:
    """Return once no bundled migration is pending; raise `ConfigError` after
    `timeout_seconds` of waiting (0: do not wait)."""
    deadline = time.monotonic() + timeout_seconds
    while pending := await pending_migrations(pool):
        if time.monotonic() >= deadline:
            raise ConfigError(
                f"The database lacks migrations {pending[0]:04d}..{pending[-1]:04d} that this "
                "version needs: run the migration Job (`imagery-admin migrate up`) first, or "
                "raise SCHEMA_WAIT_SECONDS if it is still running."
            )
        log.warning(
            "waiting for the database migrations before serving",
            extra={"pending": pending, "wait_left_s": round(deadline - time.monotonic())},
        )
        await asyncio.sleep(poll_seconds)
