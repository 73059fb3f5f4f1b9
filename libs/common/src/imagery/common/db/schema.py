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
from imagery.common.db.pool import translates_postgres_errors
from imagery.common.errors import DependencyUnavailable

log = logging.getLogger(__name__)
POLL_SECONDS = 5.0


@translates_postgres_errors
async def pending_migrations(pool: asyncpg.Pool) -> list[int] | None:
    """The bundled migrations' versions the database has not applied, in order; None when
    this role may not read them (the grant of docs/deploy.md, section 3, step 2, not run
    yet after an upgrade)."""
    wanted = {m.version for m in load_migrations()}
    try:
        rows = await pool.fetch("SELECT version FROM schema_migrations")
    except asyncpg.UndefinedTableError:  # not even the first migration ran
        rows = []
    except asyncpg.InsufficientPrivilegeError:
        return None
    return sorted(wanted - {row["version"] for row in rows})


async def wait_for_schema(
    pool: asyncpg.Pool, *, timeout_seconds: float, poll_seconds: float = POLL_SECONDS
) -> None:
    """Return once no bundled migration is pending; raise `ConfigError` after
    `timeout_seconds` of waiting (0: do not wait). Postgres going away meanwhile is waited
    out too, until the deadline (then `DependencyUnavailable`: the process cannot start)."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            pending = await pending_migrations(pool)
        except DependencyUnavailable:
            if time.monotonic() >= deadline:
                raise
            await asyncio.sleep(poll_seconds)
            continue
        if pending is None:
            log.warning(
                "cannot check the schema before serving: this role may not read"
                " schema_migrations; run the table grants of docs/deploy.md (section 3, step 2)"
            )
            return
        if not pending:
            return
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
