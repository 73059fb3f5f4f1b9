"""The migrations to projects (0009 onwards) against a table of 1,000,000 images while reads
and writes go on: how long each migration took, and how long any read or write waited.

A scratch database is migrated to 0008 and filled; each run copies it and applies the rest
with the real runner, one migration at a time, under the load the release before projects
puts on it (the migrate Job runs before a rollout): 4 readers doing delivery's lookup of 50
random images each, and 1 writer inserting PENDING records as CreateUploadUrl does. Runs:
- nothing else holds a lock;
- a transaction holds one row FOR UPDATE for 5 s from the start (0009 must wait for it);
- a transaction that updated one row stays open 5 s while 0010 builds its index.
Target: no read waits longer than the lock timeout (plus what the read costs on its own)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import shutil
import statistics
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg

from bench.harness import table
from imagery.common.db.migrate import DEFAULT_LOCK_TIMEOUT_MS, Migration, load_migrations, migrate
from imagery.common.ids import new_image_id
from imagery.devstack.fixtures import PostgresServer, with_database

DEFAULT_ROWS = 1_000_000
FIRST_NEW = 9  # 0009_projects: what runs against the filled table
READERS, BATCH, READ_PAUSE, WRITE_PAUSE = 4, 50, 0.002, 0.005
BASELINE_SECONDS, HOLD_SECONDS = 2.0, 5.0
LATENCY = ("p50 ms", "p99 ms", "max ms", "failed")
ID_PREFIX = "01HZZZ"  # + 20 hex digits: a well-formed id per row number, in Crockford base32

# The release before projects: what is live while the migrate Job runs.
READ_SQL = """
SELECT r.id, r.status, v.format, v.object_key, v.content_type
  FROM image_records r
  LEFT JOIN image_variants v
         ON v.sha256 = r.sha256 AND r.status = 'ready'
        AND v.name = $2 AND v.format = ANY($3::text[])
 WHERE r.id = ANY($1::text[])"""
WRITE_SQL = """INSERT INTO image_records
       (id, status, content_type, file_name, object_key, size_bytes, trace_context)
   VALUES ($1, 'pending', 'image/jpeg', 'holiday-photo-0001.jpg', $2, NULL, NULL)"""

SEED_BLOBS = """
INSERT INTO image_blobs (sha256, format, width, height, size_bytes, stored_at)
SELECT encode(sha256(('blob-' || j)::bytea), 'hex'), 'jpeg', 1200, 800, 200000 + j, now()
  FROM generate_series(0, $1::int - 1) AS j"""
SEED_VARIANTS = """
INSERT INTO image_variants
       (sha256, name, format, content_type, width, height, size_bytes, object_key)
SELECT b.sha256, 'small', f.format, f.content_type, 400, 267, 30000,
       'variants/' || b.sha256 || '/small.' || f.ext
  FROM image_blobs b
 CROSS JOIN (VALUES ('webp', 'image/webp', 'webp'), ('jpeg', 'image/jpeg', 'jpg'))
            AS f (format, content_type, ext)"""
# Row i: failed when i % 100 = 0, pending when 1, else ready on blob i % blobs.
SEED_RECORDS = """
INSERT INTO image_records
       (id, status, content_type, file_name, size_bytes, object_key, width, height, sha256,
        detected_format, failure_reason, created_at, updated_at, attempts)
SELECT id, status, 'image/jpeg', 'photo-' || i || '.jpg',
       CASE WHEN status <> 'pending' THEN 200000 + i % $2 END, 'uploads/' || id,
       CASE WHEN status = 'ready' THEN 1200 END, CASE WHEN status = 'ready' THEN 800 END,
       CASE WHEN status = 'ready' THEN encode(sha256(('blob-' || (i % $2))::bytea), 'hex') END,
       CASE WHEN status = 'ready' THEN 'jpeg' END,
       CASE WHEN status = 'failed' THEN 'UNSUPPORTED_FORMAT' END,
       now() - make_interval(secs => $1 - i), now() - make_interval(secs => $1 - i),
       CASE WHEN status = 'pending' THEN 0 ELSE 1 END
  FROM (SELECT i, $3 || upper(lpad(to_hex(i), 20, '0')) AS id,
               CASE i % 100 WHEN 0 THEN 'failed' WHEN 1 THEN 'pending' ELSE 'ready' END AS status
          FROM generate_series(1, $1::int) AS i) AS s"""
SEED_REFERENCES = """
UPDATE image_blobs b SET reference_count = c.n
  FROM (SELECT sha256, count(*)::int AS n FROM image_records
         WHERE sha256 IS NOT NULL GROUP BY sha256) AS c
 WHERE b.sha256 = c.sha256"""
INDEX_VALID = """SELECT coalesce((SELECT indisvalid FROM pg_index
                   WHERE indexrelid = to_regclass('image_records_project_id_idx')), false)"""
FK_VALIDATED = """SELECT coalesce((SELECT convalidated FROM pg_constraint
                   WHERE conname = 'image_records_project_id_fkey'), false)"""


@dataclass(frozen=True)
class Scenario:
    name: str
    hold_before: int | None = None  # a long transaction starts just before this migration
    hold_sql: str = ""


SCENARIOS = (
    Scenario("no long transaction"),
    Scenario(
        "FOR UPDATE held 5 s from 0009",
        FIRST_NEW,
        "SELECT id FROM image_records WHERE id = $1 FOR UPDATE",
    ),
    Scenario(
        "UPDATE open 5 s from 0010",
        FIRST_NEW + 1,
        "UPDATE image_records SET updated_at = now() WHERE id = $1",
    ),
)


@dataclass(frozen=True)
class Sample:
    started: float
    ms: float
    error: str | None


@dataclass
class Window:
    step: str
    started: float
    ended: float
    retries: int = 0


@dataclass
class Run:
    scenario: Scenario
    windows: list[Window] = field(default_factory=list)
    reads: list[Sample] = field(default_factory=list)
    writes: list[Sample] = field(default_factory=list)
    index_valid: bool = False
    fk_validated: bool = False


def record_id(i: int) -> str:
    return f"{ID_PREFIX}{i:020X}"


class _RetryCounter(logging.Handler):
    """Counts the runner's "trying again" warnings (a lock wait that hit the timeout)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


async def _timed(sink: list[Sample], query: Awaitable[object]) -> None:
    started = time.perf_counter()
    error = None
    try:
        await query
    except asyncpg.PostgresError as exc:
        error = type(exc).__name__
    sink.append(Sample(started, (time.perf_counter() - started) * 1000, error))


async def _reader(dsn: str, rows: int, sink: list[Sample], stop: asyncio.Event) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        while not stop.is_set():
            ids = [record_id(random.randint(1, rows)) for _ in range(BATCH)]
            await _timed(sink, conn.fetch(READ_SQL, ids, "small", ["webp", "jpeg"]))
            await asyncio.sleep(READ_PAUSE)
    finally:
        await conn.close()


async def _writer(dsn: str, sink: list[Sample], stop: asyncio.Event) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        while not stop.is_set():
            image_id = new_image_id()
            await _timed(sink, conn.execute(WRITE_SQL, image_id, f"uploads/{image_id}"))
            await asyncio.sleep(WRITE_PAUSE)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def _load(dsn: str, rows: int, run: Run) -> AsyncIterator[None]:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(_reader(dsn, rows, run.reads, stop)) for _ in range(READERS)]
    tasks.append(asyncio.create_task(_writer(dsn, run.writes, stop)))
    try:
        yield
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def _hold(dsn: str, sql: str, holding: asyncio.Event) -> None:
    """A long transaction: takes its lock, sits idle for HOLD_SECONDS, rolls back."""
    conn = await asyncpg.connect(dsn)
    try:
        transaction = conn.transaction()
        await transaction.start()
        await conn.execute(sql, record_id(2))  # a ready record
        holding.set()
        await asyncio.sleep(HOLD_SECONDS)
        await transaction.rollback()
    finally:
        await conn.close()


def _directories(root: Path) -> tuple[Path, list[tuple[Migration, Path]]]:
    """The migrations before FIRST_NEW in one directory, then one directory per later
    migration holding it and all before it: the runner applies one at a time."""
    migrations = load_migrations()
    steps = []
    for migration in [m for m in migrations if m.version >= FIRST_NEW]:
        directory = root / migration.name.removesuffix(".sql")
        directory.mkdir()
        for earlier in (m for m in migrations if m.version <= migration.version):
            (directory / earlier.name).write_text(earlier.sql)
        steps.append((migration, directory))
    before = root / "before"
    before.mkdir()
    for earlier in (m for m in migrations if m.version < FIRST_NEW):
        (before / earlier.name).write_text(earlier.sql)
    return before, steps


async def _seed(dsn: str, rows: int) -> float:
    """Fills a database migrated to FIRST_NEW - 1; returns the seconds it took."""
    started = time.perf_counter()
    conn = await asyncpg.connect(dsn)
    try:
        blobs = max(1, rows // 10)
        async with conn.transaction():
            await conn.execute(SEED_BLOBS, blobs)
            await conn.execute(SEED_VARIANTS)
            await conn.execute(SEED_RECORDS, rows, blobs, ID_PREFIX)
            await conn.execute(SEED_REFERENCES)
        await conn.execute("VACUUM (ANALYZE) image_blobs, image_variants, image_records")
    finally:
        await conn.close()
    return time.perf_counter() - started


async def _copy(admin_dsn: str, source_dsn: str) -> str:
    name = f"imagery_bench_{uuid.uuid4().hex[:12]}"
    source = urlsplit(source_dsn).path.lstrip("/")
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"CREATE DATABASE {name} TEMPLATE {source}")
    finally:
        await conn.close()
    return with_database(admin_dsn, name)


async def _migrate_under_load(
    dsn: str, rows: int, scenario: Scenario, steps: list[tuple[Migration, Path]]
) -> Run:
    run, retries = Run(scenario), _RetryCounter()
    holders: list[asyncio.Task[None]] = []
    logging.getLogger("imagery.common.db.migrate").addHandler(retries)
    try:
        async with _load(dsn, rows, run):
            started = time.perf_counter()
            await asyncio.sleep(BASELINE_SECONDS)
            run.windows.append(Window("baseline, no migration", started, time.perf_counter()))
            for migration, directory in steps:
                if migration.version == scenario.hold_before:
                    holding = asyncio.Event()
                    holders.append(asyncio.create_task(_hold(dsn, scenario.hold_sql, holding)))
                    await holding.wait()
                before, started = retries.count, time.perf_counter()
                await migrate(dsn, directory)
                ended = time.perf_counter()
                run.windows.append(Window(migration.name, started, ended, retries.count - before))
            await asyncio.gather(*holders)
    finally:
        logging.getLogger("imagery.common.db.migrate").removeHandler(retries)
    conn = await asyncpg.connect(dsn)
    try:
        run.index_valid = await conn.fetchval(INDEX_VALID)
        run.fk_validated = await conn.fetchval(FK_VALIDATED)
    finally:
        await conn.close()
    return run


async def measure(rows: int) -> tuple[list[Run], float, str]:
    """Every scenario on its own copy of one filled database; returns the runs, the seconds
    the filling took and the server's version."""
    server, workdir = PostgresServer.start(), Path(tempfile.mkdtemp(prefix="imagery-bench-"))
    dsns: list[str] = []
    try:
        before, steps = _directories(workdir)
        dsns.append(seed_dsn := await server.new_database(migrated=False))
        await migrate(seed_dsn, before)
        seed_seconds = await _seed(seed_dsn, rows)
        runs = []
        for scenario in SCENARIOS:
            dsns.append(dsn := await _copy(server.admin_dsn, seed_dsn))
            runs.append(await _migrate_under_load(dsn, rows, scenario, steps))
            await server.drop_database(dsns.pop())
        return runs, seed_seconds, await _server_version(seed_dsn)
    finally:
        for dsn in dsns:
            await server.drop_database(dsn)
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


async def _server_version(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


def _stats(samples: Sequence[Sample]) -> list[object]:
    """count, p50, p99, max (ms) and failures of the samples."""
    if not samples:
        return [0, "-", "-", "-", 0]
    ms = [s.ms for s in samples]
    p50, p99 = (
        (ms[0], ms[0])
        if len(ms) < 2
        else (statistics.median(ms), statistics.quantiles(ms, n=100, method="inclusive")[98])
    )
    return [len(ms), p50, p99, max(ms), sum(1 for s in samples if s.error)]


def _within(samples: Sequence[Sample], window: Window) -> list[Sample]:
    return [s for s in samples if window.started <= s.started < window.ended]


def report(
    runs: Sequence[Run], rows: int, lock_timeout_ms: int, seed_seconds: float, version: str
) -> str:
    body = [
        [
            run.scenario.name,
            window.step,
            window.retries,
            window.ended - window.started,
            *_stats(_within(run.reads, window)),
            *_stats(_within(run.writes, window)),
        ]
        for run in runs
        for window in run.windows
    ]
    out = [
        table(
            f"Migrations {FIRST_NEW:04d}+ on {rows:,} image records under load "
            f"(Postgres {version}, lock_timeout {lock_timeout_ms} ms, filled in "
            f"{seed_seconds:.0f} s; reads: {READERS} x {BATCH} ids, writes: 1 x INSERT)",
            ["run", "step", "retries", "seconds", "reads", *LATENCY, "writes", *LATENCY],
            body,
        )
    ]
    for run in runs:
        failures = Counter(s.error for s in [*run.reads, *run.writes] if s.error)
        out.append(
            f"{run.scenario.name}: project index "
            f"{'valid' if run.index_valid else 'INVALID'}, project foreign key "
            f"{'validated' if run.fk_validated else 'NOT validated'}"
            + "".join(f"; failed: {n} x {error}" for error, n in failures.items())
        )
    during = [s.ms for run in runs for w in run.windows[1:] for s in _within(run.reads, w)]
    alone = [s.ms for run in runs for s in _within(run.reads, run.windows[0])]
    longest, own = max(during, default=0.0), max(alone, default=0.0)
    verdict = "meets" if longest <= lock_timeout_ms + own else "MISSES"
    out.append(
        f"longest read during a migration {longest:,.0f} ms; lock timeout {lock_timeout_ms} ms "
        f"+ longest read without one {own:,.0f} ms ({verdict} the target)\n"
    )
    return "\n".join(out)


def main(rows: int = DEFAULT_ROWS) -> None:
    lock_timeout_ms = int(os.environ.get("MIGRATION_LOCK_TIMEOUT_MS", DEFAULT_LOCK_TIMEOUT_MS))
    runs, seed_seconds, version = asyncio.run(measure(rows))
    print(report(runs, rows, lock_timeout_ms, seed_seconds, version), flush=True)


if __name__ == "__main__":
    main()
