"""Numbered `.sql` migrations, applied in order, each once, safe from many processes at once.

A session-level advisory lock serialises concurrent runners (several pods starting together);
`schema_migrations` records what ran with a checksum, so an edited, already-applied file is
refused instead of silently ignored. Run: `python -m imagery.common.db.migrate`.
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


async def migrate(dsn: str, directory: Path | None = None) -> list[str]:
    """Apply pending migrations; returns the names applied by this call."""
    migrations = load_migrations(directory)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
        try:
            return await _apply_pending(conn, migrations)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)
    finally:
        await conn.close()


async def _apply_pending(conn: asyncpg.Connection, migrations: list[Migration]) -> list[str]:
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
        async with conn.transaction():
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                migration.checksum,
            )
        log.info("applied migration %s", migration.name)
        done.append(migration.name)
    return done


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
