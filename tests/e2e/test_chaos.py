"""Chaos, bounded: ~200 uploads, good and hostile (identical bytes among them), while the
processor is SIGKILLed at random moments, the test's own Postgres crashes and comes back, and
the S3/SQS endpoint stops answering for 30 s. Afterwards every upload has the one outcome its
content calls for, the reference counts and the stored objects agree with the rows, and
nothing is left in the dead-letter queue.

The processor reaches S3/SQS through a proxy that the outage pauses (moto keeps its state, and
the test's own calls, which go to moto directly, are not held up); Postgres is an embedded
server of this test alone, never a shared one. CHAOS_SEED=<seed> replays a run's plan (the
uploads' order, when Postgres crashes and when the endpoint goes silent); kills and timings
still vary with the machine.

    .venv/bin/pytest -q -s -p no:cacheprovider tests/e2e/test_chaos.py"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import itertools
import json
import os
import random
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import asyncpg
import pytest

from imagery.common.db.migrate import migrate
from imagery.common.storage_keys import GLOBAL_SCOPE, original_key
from imagery.devstack.chaos import CrashablePostgres, PausableProxy, kill_all
from imagery.devstack.fixtures import AwsServer
from imagery.devstack.pipeline import Pipeline, service_env
from imagery.devstack.procs import free_port
from imagery.devstack.services import ServiceProcess, grpc_serving
from tests import images

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024
LOAD_SECONDS = 60.0  # uploads arrive evenly over this long
KILLS = 12  # SIGKILLs of the whole processor (its process group), at random moments:
KILLED_STARTING = 0.15  # this share while it starts,
LIFE_AFTER_READY = (0.3, 5.0)  # the others this long after it serves
STARTUP_WITHIN = 15.0  # (or once it failed to serve for this long)
POSTGRES_CRASH_AT = (12.0, 22.0)
POSTGRES_DOWN_SECONDS = 5.0
HOLD_KILLS_AFTER_CRASH = 3.0  # the processor that meets a fault lives on for this long
OUTAGE_AT = (28.0, 38.0)
OUTAGE_SECONDS = 30.0
HOLD_KILLS_AFTER_OUTAGE = (10.0, 35.0)  # at random: killed in the outage, or living it through
JOB_WAIT_SECONDS = 5.0  # a fault waits this long at most for a job in flight to hit
DRAIN_WITHIN = 90.0  # after the last fault: every upload terminal
QUEUE_EMPTY_WITHIN = 60.0  # then: every message gone
VISIBILITY_TIMEOUT = 4
MAX_RECEIVE_COUNT = 3  # low, so that kills and outages dead-letter some events
CHAOS_SETTINGS = {
    "PROCESSOR_JOB_SLOTS": "2",
    "PROCESSOR_CONCURRENCY": "4",
    "PROCESSOR_JOB_TIMEOUT_SECONDS": "5",
    "PROCESSOR_CLAIM_STALE_SECONDS": "6",
    "PROCESSOR_RETRY_BASE_SECONDS": "1",
    "PROCESSOR_GC_INTERVAL_SECONDS": "2",
    "PROCESSOR_SHUTDOWN_GRACE_SECONDS": "2",
    "PROCESSOR_ABANDONED_AFTER_SECONDS": "3600",  # no upload of this test is abandoned
    # One project: a fair-share cap would only defer its messages, spending the receives
    # this test keeps low (maxReceiveCount 3) on purpose to reach the dead-letter path.
    "PROCESSOR_PROJECT_MAX_IN_FLIGHT": "0",
    "LOG_LEVEL": "info",
}
READY = "ready"
EXIT_CANNOT_START = 2  # a processor started while Postgres was down


@dataclass(frozen=True)
class Upload:
    kind: str
    body: bytes
    content_type: str
    expected: str  # "ready" or the failure reason

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.body).hexdigest()


@dataclass
class Timeline:
    """What happened when, in seconds since the load started."""

    started: float = field(default_factory=time.monotonic)
    kills: list[float] = field(default_factory=list)
    exits: list[tuple[float, int | None]] = field(default_factory=list)  # ended on their own
    postgres_down: tuple[float, float] = (0.0, 0.0)
    outage: tuple[float, float] = (0.0, 0.0)
    submitted_by: float = 0.0
    no_kills_until: float = 0.0  # a fault just began: the processor that meets it lives on
    claims_at_kills: list[int | None] = field(default_factory=list)  # `processing` records

    def now(self) -> float:
        return time.monotonic() - self.started

    async def until(self, at: float) -> None:
        await asyncio.sleep(max(0.0, at - self.now()))


class Supervisor:
    """One processor kept running, as Kubernetes would: one that ends on its own is started
    again after a second; `kill()` SIGKILLs the whole process group and starts the next one
    at once."""

    def __init__(self, start: Callable[[int], ServiceProcess], timeline: Timeline) -> None:
        self._start = start
        self._timeline = timeline
        self.processes: list[ServiceProcess] = []
        self.startups: list[float] = []  # seconds from start to serving
        self._serving = asyncio.Event()  # the current processor was seen serving
        self._born = 0.0
        self.process = self._spawn()

    def _spawn(self) -> ServiceProcess:
        process = self._start(len(self.processes) + 1)
        self.processes.append(process)
        self._born = time.monotonic()
        self._serving.clear()
        return process

    async def _keep_up(self) -> None:
        proc = self.process.proc
        assert proc is not None
        if proc.poll() is not None:
            self._timeline.exits.append((round(self._timeline.now(), 1), proc.returncode))
            self.process.stop()
            self._serving.clear()
            await asyncio.sleep(1)
            self.process = self._spawn()

    async def live_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            await self._keep_up()
            await asyncio.sleep(0.05)

    async def until_serving(self, within: float) -> bool:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            await self._keep_up()
            if self._serving.is_set():
                return True
            if await asyncio.to_thread(grpc_serving, self.process.port):
                self.startups.append(time.monotonic() - self._born)
                self._serving.set()
                return True
            await asyncio.sleep(0.2)
        return False

    async def until_a_processor_serves(self) -> None:
        """Until the killer has seen the current processor serve (it does not poll itself)."""
        await self._serving.wait()

    def kill(self) -> None:
        self._serving.clear()
        kill_all(self.process)
        self._timeline.kills.append(self._timeline.now())
        self.process = self._spawn()


def _uploads(rng: random.Random) -> list[Upload]:
    """200 uploads: distinct good files, identical bytes several times (also declared as the
    wrong type), and hostile files of every kind with the reason each must end with."""
    good: list[Upload] = []
    for i in range(60):
        w, h = 80 + 5 * i, 60 + 3 * i
        good.append(
            Upload(
                "jpeg",
                images.jpeg(w, h, orientation=6 if i % 5 == 0 else None),
                "image/jpeg",
                READY,
            )
        )
    for i in range(12):
        good.append(
            Upload("png", images.png(40 + 7 * i, 30 + 5 * i, alpha=i % 2 == 0), "image/png", READY)
        )
    for i in range(8):
        good.append(Upload("webp", images.webp(50 + 9 * i, 40 + 4 * i), "image/webp", READY))
    for i in range(6):
        good.append(Upload("gif", images.gif(2 + i, (20 + i, 20 + i)), "image/gif", READY))
    for i in range(6):
        good.append(Upload("avif", images.avif(40 + 8 * i, 30 + 2 * i), "image/avif", READY))
    same_jpeg = images.jpeg(640, 480, orientation=6)
    same_png = images.png(300, 200, alpha=True)
    same_webp = images.webp(120, 90)
    same_gif = images.gif(4)
    dup = (
        [Upload("dup jpeg", same_jpeg, "image/jpeg", READY)] * 10
        + [Upload("dup png", same_png, "image/png", READY)] * 8
        + [Upload("dup webp", same_webp, "image/webp", READY)] * 6
        + [Upload("dup gif", same_gif, "image/gif", READY)] * 6
        + [Upload("dup jpeg as png", same_jpeg, "image/png", "CONTENT_TYPE_MISMATCH")] * 3
        + [Upload("dup png as webp", same_png, "image/webp", "CONTENT_TYPE_MISMATCH")] * 2
    )
    unsupported = "UNSUPPORTED_FORMAT"
    hostile = (
        [Upload("random", images.random_bytes(), "image/jpeg", unsupported) for _ in range(8)]
        + [Upload("html as jpeg", images.html(), "image/jpeg", unsupported)] * 8
        + [Upload("tiff", images.tiff(), "image/jpeg", unsupported)] * 4
        + [Upload("bmp", images.bmp(), "image/png", unsupported)] * 4
        + [Upload("psd", images.psd(), "image/jpeg", unsupported)] * 4
        + [Upload("truncated jpeg", images.truncated_jpeg(), "image/jpeg", "CORRUPT")] * 4
        + [
            Upload("truncated jpeg", _truncated(300 + 20 * i), "image/jpeg", "CORRUPT")
            for i in range(4)
        ]
        + [Upload("pixel flood", images.pixel_flood_png(), "image/png", "DIMENSIONS_EXCEEDED")] * 6
        + [Upload("3000 frames", images.gif(3000, (1, 1)), "image/gif", "DIMENSIONS_EXCEEDED")] * 2
        + [Upload("empty", b"", ct, "EMPTY") for ct in ("image/png", "image/jpeg") * 4]
        + [
            Upload("png as jpeg", images.png(20 + i, 20), "image/jpeg", "CONTENT_TYPE_MISMATCH")
            for i in range(8)
        ]
        + [
            Upload("jpeg as webp", images.jpeg(30 + i, 20), "image/webp", "CONTENT_TYPE_MISMATCH")
            for i in range(4)
        ]
        + [Upload("gif as png", images.gif(3), "image/png", "CONTENT_TYPE_MISMATCH")]
        + [Upload("bad exif", images.jpeg_with_malformed_exif(), "image/jpeg", "UNPROCESSABLE")] * 6
        + [Upload("too large", b"\xff\xd8\xff" + b"\0" * (10 * MIB), "image/jpeg", "TOO_LARGE")] * 2
    )
    uploads = good + dup + hostile
    rng.shuffle(uploads)
    return uploads


def _truncated(width: int) -> bytes:
    data = images.jpeg(width, width * 3 // 4, quality=95)
    return data[: len(data) // 2]


@pytest.fixture
def seed() -> int:
    return int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(1 << 32))


@pytest.fixture
async def own_postgres() -> AsyncIterator[tuple[CrashablePostgres, str]]:
    """An embedded Postgres of this test alone (durable: it crashes and must keep its data),
    with a migrated database; never the machine's shared server."""
    root = Path(tempfile.mkdtemp(prefix="imagery-chaos-pg-"))
    pg = CrashablePostgres(root / "data", free_port(), durable=True)
    try:
        await asyncio.to_thread(pg.start)
        dsn = await asyncio.to_thread(pg.create_database, "imagery")
        await migrate(dsn)
        yield pg, dsn
    finally:
        await asyncio.to_thread(pg.stop)
        shutil.rmtree(root, ignore_errors=True)


async def test_chaos_every_upload_ends_once_and_rows_match_objects(
    own_postgres: tuple[CrashablePostgres, str],
    aws_server: AwsServer,
    aws_proxy: PausableProxy,
    tmp_path: Path,
    seed: int,
) -> None:
    pg, dsn = own_postgres
    proxy = aws_proxy
    rng = random.Random(seed)
    print(f"\nchaos seed {seed} (CHAOS_SEED={seed} replays the plan)")
    uploads = _uploads(rng)
    aws = aws_server.new_resources(
        visibility_timeout=VISIBILITY_TIMEOUT, max_receive_count=MAX_RECEIVE_COUNT
    )
    pipeline = Pipeline(dsn, aws, tmp_path)
    env = {
        **service_env(dsn, aws),
        **CHAOS_SETTINGS,
        "AWS_ENDPOINT_URL": proxy.url,  # the processor's S3 and SQS go through the proxy
    }

    def start_processor(n: int) -> ServiceProcess:
        process = ServiceProcess(
            "processor",
            "imagery.processor",
            free_port(),
            tmp_path / f"processor-{n:02}.log",
            env,
            echo=None,
        )
        process.start()
        return process

    timeline = Timeline()
    supervisor = Supervisor(start_processor, timeline)
    submitted: dict[str, Upload] = {}
    db_lock = asyncio.Lock()  # the test's own database calls never meet the Postgres crash
    crash_at = rng.uniform(*POSTGRES_CRASH_AT)
    outage_at = rng.uniform(*OUTAGE_AT)

    async def submit_all() -> None:
        for i, upload in enumerate(uploads):
            await timeline.until(i * LOAD_SECONDS / len(uploads))
            async with db_lock:
                image_id = await pipeline.create_pending(upload.content_type)
            submitted[image_id] = upload
            await pipeline.put_upload(image_id, upload.body, upload.content_type)
        timeline.submitted_by = timeline.now()

    async def crash_postgres() -> None:
        await timeline.until(crash_at)
        await supervisor.until_a_processor_serves()  # the crash is to hit a working processor
        await until_a_job_runs()
        async with db_lock:
            down = timeline.now()
            await asyncio.to_thread(pg.crash)
            timeline.no_kills_until = timeline.now() + HOLD_KILLS_AFTER_CRASH
            await asyncio.sleep(POSTGRES_DOWN_SECONDS)
            await asyncio.to_thread(pg.start)
            timeline.postgres_down = (down, timeline.now())

    async def stop_answering() -> None:
        await timeline.until(outage_at)
        await supervisor.until_a_processor_serves()
        await until_a_job_runs()
        proxy.pause()
        begun = timeline.now()
        timeline.no_kills_until = begun + rng.uniform(*HOLD_KILLS_AFTER_OUTAGE)
        try:
            await asyncio.sleep(OUTAGE_SECONDS)
        finally:
            proxy.resume()
        timeline.outage = (begun, timeline.now())

    async def claims_held() -> int | None:
        """`processing` records right after a kill: the claims it died with (or older ones)."""
        async with db_lock:
            try:
                conn = await asyncpg.connect(dsn, timeout=5)
            except (OSError, asyncpg.PostgresError, TimeoutError):
                return None
            try:
                held: int = await conn.fetchval(
                    "SELECT count(*) FROM image_records WHERE status = 'processing'"
                )
            finally:
                await conn.close()
            return held

    async def until_a_job_runs() -> None:
        for _ in range(int(JOB_WAIT_SECONDS / 0.05)):
            if await claims_held():
                return
            await asyncio.sleep(0.05)

    async def kill_repeatedly() -> None:
        while len(timeline.kills) < KILLS:
            if rng.random() < KILLED_STARTING:
                await supervisor.live_for(rng.uniform(0.2, 2.0))
            else:  # a random moment of its work (or of a start-up that never ends)
                await supervisor.until_serving(STARTUP_WITHIN)
                await supervisor.live_for(rng.uniform(*LIFE_AFTER_READY))
            await supervisor.live_for(timeline.no_kills_until - timeline.now())
            supervisor.kill()
            timeline.claims_at_kills.append(await claims_held())

    try:
        await asyncio.gather(submit_all(), crash_postgres(), stop_answering(), kill_repeatedly())
        assert await supervisor.until_serving(90), "the processor never came back"
        last = supervisor.process
        faults_over = timeline.now()
        ids = list(submitted)
        backlog = sum(
            r["status"] not in (READY, "failed") for r in (await pipeline.records(ids)).values()
        )
        dead_letters = pipeline.queue_counts(aws.dlq_url)
        startups = sorted(supervisor.startups)

        def span(pair: tuple[float, float]) -> str:
            return f"{pair[0]:.1f}-{pair[1]:.1f} s"

        _print_rows(
            [
                ("uploads", f"{len(ids)} ({len({u.sha256 for u in uploads})} distinct contents)"),
                ("submitted by", f"{timeline.submitted_by:.1f} s"),
                ("processor SIGKILLs", f"{len(timeline.kills)} at {_seconds(timeline.kills)}"),
                ("claims held at the kills", timeline.claims_at_kills),
                ("processor starts", len(supervisor.processes)),
                ("start to serving", f"{_seconds(startups[:1] + startups[-1:])} (min, max)"),
                ("exits on their own", timeline.exits or "none"),
                ("Postgres down", span(timeline.postgres_down)),
                ("S3/SQS not answering", span(timeline.outage)),
                ("proxied connections", proxy.accepted),
                ("faults over at", f"{faults_over:.1f} s (last processor serving)"),
                ("then unfinished uploads", backlog),
                ("then dead letters", dead_letters),
            ]
        )
        records = await _wait_terminal(pipeline, ids, DRAIN_WITHIN, last)
        drained = timeline.now()
        queue_left = await _wait_queues_empty(pipeline, QUEUE_EMPTY_WITHIN)
        queue_empty_at = timeline.now()
        assert last.proc is not None and last.proc.poll() is None, "the last processor survived"

        outcomes = collections.Counter(r["failure_reason"] or r["status"] for r in records.values())
        objects = await _objects_against_rows(pipeline)
        logs = _log_figures(supervisor.processes)
        _print_rows(
            [
                ("all terminal at", f"{drained:.1f} s (drain {drained - faults_over:.1f} s)"),
                ("queues empty at", f"{queue_empty_at:.1f} s, left {queue_left}"),
                ("max attempts of a record", max(r["attempts"] for r in records.values())),
                ("outcomes", len(records)),
                *((f"  {reason}", n) for reason, n in sorted(outcomes.items())),
                *logs.figures.items(),
                ("finished twice (log)", len(logs.finished_twice)),
                *((what, len(keys)) for what, keys in objects.items()),
            ]
        )

        assert len(ids) == len(uploads) and len(timeline.kills) >= 10
        crashed = [(at, code) for at, code in timeline.exits if code != EXIT_CANNOT_START]
        assert crashed == [], "processors that ended on their own, other than failing to start"
        wrong = {
            image_id: (upload.kind, upload.expected, _outcome(records[image_id]))
            for image_id, upload in submitted.items()
            if _outcome(records[image_id]) != _expected(upload)
        }
        assert wrong == {}, f"uploads that ended otherwise than their content calls for: {wrong}"
        assert queue_left == ((0, 0), (0, 0)), f"(queue, dead-letter queue) left: {queue_left}"
        await _assert_counts_match_ready_references(pipeline)
        assert objects["rows without their objects"] == [], objects
        assert objects["objects without a row"] == [], objects
        await pipeline.assert_invariants()
        assert logs.finished_twice == {}, "uploads taken to a terminal state twice"
        assert logs.unexpected == [], "errors in the processors' logs"
    finally:
        for process in supervisor.processes:
            process.stop(timeout=5)
        proxy.resume()


def _outcome(record: asyncpg.Record) -> tuple[str, str | None, str | None]:
    if record["status"] == READY:
        return (READY, record["detected_format"], record["sha256"])
    return (record["status"], record["failure_reason"], None)


def _expected(upload: Upload) -> tuple[str, str | None, str | None]:
    if upload.expected == READY:
        return (READY, upload.kind.removeprefix("dup "), upload.sha256)
    return ("failed", upload.expected, None)


async def _wait_terminal(
    pipeline: Pipeline, ids: list[str], within: float, process: ServiceProcess
) -> dict[str, asyncpg.Record]:
    deadline = time.monotonic() + within
    while True:
        records = await pipeline.records(ids)
        unfinished = {
            i: (r["status"], r["attempts"], str(r["updated_at"]))
            for i, r in records.items()
            if r["status"] not in (READY, "failed")
        }
        if len(records) == len(ids) and not unfinished:
            return records
        assert process.proc is not None
        exited = process.proc.poll()
        assert exited is None, f"the processor exited ({exited}) with {len(unfinished)} unfinished"
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{len(unfinished)} uploads not terminal {within:.0f} s after the faults:"
                f" {unfinished}; queue {pipeline.queue_counts()},"
                f" DLQ {pipeline.queue_counts(pipeline.aws.dlq_url)}"
            )
        await asyncio.sleep(0.5)


async def _wait_queues_empty(
    pipeline: Pipeline, within: float
) -> tuple[tuple[int, int], tuple[int, int]]:
    deadline = time.monotonic() + within
    while True:
        left = pipeline.queue_counts(), pipeline.queue_counts(pipeline.aws.dlq_url)
        if left == ((0, 0), (0, 0)) or time.monotonic() > deadline:
            return left
        await asyncio.sleep(0.5)


async def _assert_counts_match_ready_references(pipeline: Pipeline) -> None:
    conn = await asyncpg.connect(pipeline.dsn)
    try:
        mismatched = await conn.fetch(
            """SELECT b.sha256, b.reference_count, count(r.id) AS ready
                 FROM image_blobs b
                 LEFT JOIN image_records r ON r.sha256 = b.sha256 AND r.status = 'ready'
                GROUP BY b.sha256, b.reference_count
               HAVING b.reference_count <> count(r.id)"""
        )
        rowless = await conn.fetch(
            """SELECT r.id, r.sha256 FROM image_records r
                WHERE r.status = 'ready' AND NOT EXISTS (
                      SELECT 1 FROM image_blobs b
                       WHERE b.sha256 = r.sha256 AND b.stored_at IS NOT NULL)"""
        )
    finally:
        await conn.close()
    assert [dict(r) for r in mismatched] == [], "reference counts differ from READY references"
    assert [dict(r) for r in rowless] == [], "READY images whose content row is not stored"


async def _objects_against_rows(pipeline: Pipeline) -> dict[str, list[str]]:
    """Objects under originals/ and variants/ against the content rows: a referenced row must
    have all its objects; an object must belong to a row. Objects of unreferenced rows
    (reservations or tombstones awaiting collection) are allowed, and listed apart."""
    conn = await asyncpg.connect(pipeline.dsn)
    try:
        rows = await conn.fetch(
            """SELECT b.sha256, b.reference_count,
                      ARRAY(SELECT object_key FROM image_variants v WHERE v.sha256 = b.sha256)
                      AS keys
                 FROM image_blobs b"""
        )
    finally:
        await conn.close()
    stored = set()
    for prefix in (original_key(GLOBAL_SCOPE, ""), "variants/"):
        paginator = pipeline.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=pipeline.aws.bucket, Prefix=prefix):
            stored |= {o["Key"] for o in page.get("Contents", [])}
    owned: dict[str, int] = {}
    missing: list[str] = []
    for row in rows:
        keys = [original_key(GLOBAL_SCOPE, row["sha256"]), *row["keys"]]
        for key in keys:
            owned[key] = row["reference_count"]
        if row["reference_count"] > 0:
            missing += [k for k in keys if k not in stored]
    return {
        "rows without their objects": sorted(missing),
        "objects without a row": sorted(k for k in stored if k not in owned),
        "objects of unreferenced rows": sorted(k for k in stored if owned.get(k) == 0),
        "unreferenced rows": sorted(r["sha256"] for r in rows if r["reference_count"] == 0),
    }


_LOGGED = {
    "message failed; it will be retried": "transient failures (retried)",
    "message failed unexpectedly": "unexpected failures",
    "a dependency is unavailable: receiving paused": "receiving paused",
    "dependencies answer again: receiving resumed": "receiving resumed",
    "could not release claim": "claims not released",
    "finished uploads the queue did not": "sweeps that finished uploads",
    "dead letters sent back to the queue": "dead-letter redrives",
    "known content has lost objects: rebuilding them from this upload": "content rebuilt",
    "could not change message visibility": "visibility changes failed",
}


@dataclass
class LogFigures:
    figures: dict[str, object]
    finished_twice: dict[str, list[str]]  # image id -> its outcomes, when it has two
    unexpected: list[str]  # lines of errors nobody expected


def _log_figures(processes: list[ServiceProcess]) -> LogFigures:
    """What the processors' logs say: how messages were handled, the notable events, and the
    uploads that two jobs took to a terminal state (each must have been finished once)."""
    handled: collections.Counter[str] = collections.Counter()
    finished: dict[str, list[str]] = collections.defaultdict(list)
    unexpected: list[str] = []
    outcome_times: list[str] = []
    events: collections.Counter[str] = collections.Counter()
    levels: collections.Counter[str] = collections.Counter()
    max_receives = 0
    for process in processes:
        if not process.log_path.exists():
            continue
        for line in process.log_path.read_text(errors="replace").splitlines():
            if not line.startswith("{"):
                if line.strip():
                    levels["non-JSON lines"] += 1
                continue
            entry = json.loads(line)
            message = entry.get("message", "")
            levels[str(entry.get("level", "?")).lower()] += 1
            if entry.get("level") in ("error", "critical"):
                unexpected.append(line[:1000])
            if message == "upload processed":
                outcome_times.append(entry["time"])
                handled[entry["outcome"]] += 1
                if entry["outcome"] in (READY, "failed"):
                    finished[entry["image_id"]].append(
                        f"{entry['outcome']} {entry.get('failure_reason') or ''}".strip()
                    )
                max_receives = max(max_receives, int(entry.get("receive_count") or 0))
            if message in _LOGGED:
                events[_LOGGED[message]] += 1
    times = sorted(datetime.fromisoformat(t) for t in outcome_times)
    gap = max(((b - a).total_seconds() for a, b in itertools.pairwise(times)), default=0.0)
    figures: dict[str, object] = {
        "processing outcomes (log)": dict(handled),
        "longest stretch without one": f"{gap:.1f} s",
        "events": dict(events),
        "log levels": dict(levels),
        "max receive count": max_receives,
    }
    twice = {image_id: seen for image_id, seen in finished.items() if len(seen) > 1}
    return LogFigures(figures, twice, unexpected)


def _seconds(values: list[float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values) + " s"


def _print_rows(rows: list[tuple[str, object]]) -> None:
    print("\n".join(f"{name:<28}  {value}" for name, value in rows), flush=True)
