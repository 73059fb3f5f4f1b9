"""Numbered `.sql` migrations, applied in order, each once, safe from many processes at once.

A session-level advisory lock, waited for by polling, serialises concurrent runners (several
pods starting together); `schema_migrations` records what ran with a checksum, so an edited,
already-applied file is refused instead of silently ignored. Run:
`python -m imagery.common.db.migrate`.

Live traffic survives a migration: every migration runs with a `lock_timeout`
(`MIGRATION_LOCK_TIMEOUT_MS`, default 2000), so it never queues in front of reads for longer
than that behind a long transaction; it gives up and tries again a few times, then fails
naming the lock. A file whose first line is `-- imagery:no-transaction` runs outside a
transaction, one statement at a time (each ends with `;` at the end of a line), so indexes can
be built `CONCURRENTLY`; write such statements to be safe to run again (`IF NOT EXISTS`),
since a failure part way leaves the earlier ones applied.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import asyncpg

log = logging.getLogger(__name__)

ADVISORY_LOCK_KEY = 0x1A6E_5EED  # "imagery migrations", any constant shared by all runners
_NAME_RE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
NO_TRANSACTION = "-- imagery:no-transaction"
DEFAULT_LOCK_TIMEOUT_MS = 2000
LOCK_ATTEMPTS = 5


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def transactional(self) -> bool:
        return not self.sql.lstrip().startswith(NO_TRANSACTION)

    def statements(self) -> list[str]:
        """One statement per `;` at a line's end (for migrations run outside a transaction)."""
        found: list[str] = []
        current: list[str] = []
        for line in self.sql.splitlines():
            current.append(line)
            if line.rstrip().endswith(";"):
                code = [ln for ln in current if ln.strip() and not ln.strip().startswith("--")]
                if code:
                    found.append("\n".join(code))
                current = []
        return found


def load_migrations(directory: Path | None = None) -> list[Migration]:
    root = directory or Path(str(resources.files("imagery.common.db") / "migrations"))
    found = []
    for path in sorted(root.iterdir()):
        match = _NAME_RE.match(path.name)
        if match:
            found.append(Migration(int(match.group(1)), path.name, path.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"Two migrations share a number in {root}: renumber one.")
    return found


async def migrate(
    dsn: str, directory: Path | None = None, *, lock_timeout_ms: int | None = None
) -> list[str]:
    """Apply pending migrations; returns the names applied by this call."""
    migrations = load_migrations(directory)
    timeout = lock_timeout_ms or int(
        os.environ.get("MIGRATION_LOCK_TIMEOUT_MS", DEFAULT_LOCK_TIMEOUT_MS)
    )
    conn = await asyncpg.connect(dsn)
    try:
        await _take_lock(conn)
        try:
            return await _apply_pending(conn, migrations, timeout)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)
    finally:
        await conn.close()


async def _take_lock(conn: asyncpg.Connection) -> None:
    """Wait for the runners' advisory lock without holding a snapshot meanwhile: a runner
    blocked inside `pg_advisory_lock` holds one, and `CREATE INDEX CONCURRENTLY` in the runner
    that has the lock waits for every older snapshot, so the two would deadlock."""
    taken = "SELECT pg_try_advisory_lock($1)"
    while not await conn.fetchval(taken, ADVISORY_LOCK_KEY):  # noqa: ASYNC110 - in Postgres
        await asyncio.sleep(0.2)


async def _apply_pending(
    conn: asyncpg.Connection, migrations: list[Migration], lock_timeout_ms: int
) -> list[str]:
    await conn.execute(
        """CREATE TABLE IF NOT EXISTS schema_migrations (
               version    integer     PRIMARY KEY,
               name       text        NOT NULL,
               checksum   text        NOT NULL,
               applied_at timestamptz NOT NULL DEFAULT now())"""
    )
    rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
    applied = {r["version"]: r for r in rows}
    done = []
    for migration in migrations:
        row = applied.get(migration.version)
        if row is not None:
            if row["checksum"] != migration.checksum:
                raise MigrationError(
                    f"{migration.name} was changed after it was applied: "
                    "add a new migration instead."
                )
            continue
        await _apply(conn, migration, lock_timeout_ms)
        log.info("applied migration %s", migration.name)
        done.append(migration.name)
    return done


async def _apply(conn: asyncpg.Connection, migration: Migration, lock_timeout_ms: int) -> None:
    """One migration under a lock timeout, tried again with growing pauses when a lock it
    needs is held longer than that (a long transaction): live reads never wait on it long."""
    for attempt in range(1, LOCK_ATTEMPTS + 1):
        try:
            if migration.transactional:
                async with conn.transaction():
                    await conn.execute(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}")
                    await conn.execute(migration.sql)
                    await _record(conn, migration)
            else:
                await conn.execute(f"SET lock_timeout = {int(lock_timeout_ms)}")
                try:
                    for statement in migration.statements():
                        await _execute(conn, statement, lock_timeout_ms)
                    await _record(conn, migration)
                finally:
                    await conn.execute("RESET lock_timeout")
            return
        except asyncpg.exceptions.LockNotAvailableError:
            if attempt == LOCK_ATTEMPTS:
                raise MigrationError(
                    f"{migration.name} could not take its locks within {lock_timeout_ms} ms, "
                    f"{LOCK_ATTEMPTS} times: a long transaction holds them; end it and run "
                    "the migrations again."
                ) from None
            log.warning(
                "migration %s waited longer than the lock timeout; trying again", migration.name
            )
            await asyncio.sleep(0.5 * attempt)


async def _execute(conn: asyncpg.Connection, statement: str, lock_timeout_ms: int) -> None:
    """A concurrent index build blocks no reads or writes, but waits for every transaction
    older than it: under a lock timeout one long transaction would cancel it (leaving an
    INVALID index) however harmless the wait, so it runs without one."""
    if "CONCURRENTLY" not in statement.upper():
        await conn.execute(statement)
        return
    await conn.execute("SET lock_timeout = 0")
    try:
        await conn.execute(statement)
    finally:
        await conn.execute(f"SET lock_timeout = {int(lock_timeout_ms)}")


async def _record(conn: asyncpg.Connection, migration: Migration) -> None:
    await conn.execute(
        "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
        migration.version,
        migration.name,
        migration.checksum,
    )


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    dsn = os.environ.get("DATABASE_URL")
    if not dsn:
        print("DATABASE_URL is not set: point it at the imagery database.", file=sys.stderr)
        return 2
    applied = asyncio.run(migrate(dsn))
    print(f"migrations: {len(applied)} applied ({', '.join(applied) or 'already up to date'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
