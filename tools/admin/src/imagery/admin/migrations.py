"""`imagery-admin migrate status`: which numbered migrations the database has and which it
lacks, as an exit code a deploy pipeline or an init container can wait on. Reads only
`schema_migrations` (the runner's record, `imagery.common.db.migrate`); changes nothing."""

from __future__ import annotations

import asyncio
import sys
import time
from argparse import Namespace
from typing import Any

import asyncpg

from imagery.admin import direct
from imagery.admin.output import CliError, emit, iso, table, when
from imagery.common.db.migrate import load_migrations

Plain = dict[str, Any]
UP_TO_DATE = 0
PENDING = 3
POLL_SECONDS = 1.0

STATUS_ABOUT = (
    "Show the migrations this release ships and whether the database has each (number, name, "
    "applied_at). Exit codes: 0 up to date; 3 migrations are pending (with --wait: still "
    "pending when the time is out); 1 the database cannot be read, or an applied migration "
    "was edited since (`migrate up` refuses it too); 2 usage. Applied migrations this release "
    "does not know (a newer release ran) are listed and do not count as pending. --wait "
    "SECONDS polls until the database is up to date, also through a database that does not "
    "answer yet, for an init container that must start only after the migrate Job. It needs "
    "a role that may read schema_migrations (the migrate role, imagery-migrate-db)."
)


async def migration_status(dsn: str) -> Plain:
    known = load_migrations()
    conn = await asyncpg.connect(dsn)
    try:
        rows = []
        if await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL"):
            rows = await conn.fetch(
                "SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY 1"
            )
    finally:
        await conn.close()
    applied = {r["version"]: r for r in rows}
    numbers = {m.version for m in known}
    changed = [
        m.name
        for m in known
        if m.version in applied and applied[m.version]["checksum"] != m.checksum
    ]
    return {
        "up_to_date": not changed and all(m.version in applied for m in known),
        "applied": [
            {"number": r["version"], "name": r["name"], "applied_at": iso(r["applied_at"])}
            for r in rows
        ],
        "pending": [
            {"number": m.version, "name": m.name, "applied_at": None}
            for m in known
            if m.version not in applied
        ],
        "changed": changed,
        "unknown": [r["name"] for r in rows if r["version"] not in numbers],
    }


async def wait_until_up_to_date(dsn: str, seconds: int) -> Plain:
    """The status once the database is up to date or `seconds` have passed; a database that
    does not answer (yet) counts as not up to date, until the time is out."""
    deadline = time.monotonic() + seconds
    told = False
    while True:
        try:
            data = await migration_status(dsn)
        except (OSError, asyncpg.CannotConnectNowError) as exc:
            if time.monotonic() >= deadline:
                raise
            why = f"the database does not answer yet ({type(exc).__name__})"
        else:
            if data["up_to_date"] or data["changed"] or time.monotonic() >= deadline:
                return data
            why = f"{len(data['pending'])} migration(s) pending"
        if not told:
            print(f"imagery-admin: waiting up to {seconds} s: {why}.", file=sys.stderr)
            told = True
        await asyncio.sleep(min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))


def status_command(args: Namespace, dsn: str) -> int:
    data = direct.run(lambda: wait_until_up_to_date(dsn, args.wait))
    emit(args.json, data, lambda: _text(data))
    if data["changed"]:
        raise CliError(
            f"{data['changed'][0]} was changed after it was applied: restore the file as it "
            "was applied and add a new migration instead."
        )
    return UP_TO_DATE if data["up_to_date"] else PENDING


def _text(data: Plain) -> str:
    rows = [(f"{m['number']:04d}", m["name"], when(m["applied_at"])) for m in data["applied"]]
    rows += [(f"{m['number']:04d}", m["name"], "pending") for m in data["pending"]]
    rows.sort(key=lambda row: row[0])
    lines = [table(("NUMBER", "NAME", "APPLIED"), rows)] if rows else []
    if data["unknown"]:
        lines.append(f"Applied by a newer release than this one: {', '.join(data['unknown'])}.")
    pending = len(data["pending"])
    lines.append(
        f"{pending} migration(s) pending: `imagery-admin migrate up` applies them."
        if pending
        else f"Up to date: {len(data['applied'])} migration(s) applied."
    )
    return "\n".join(lines)
