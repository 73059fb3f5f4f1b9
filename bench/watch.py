"""WatchImage at 1,000 streams on one delivery process (the production build, a real process
on 127.0.0.1, real Postgres), then changes committed to the watched images; each latency runs
from just before the committing statement is sent to the state arriving at the client:
- open: 1,000 streams at once, to the first state of each;
- steady: one label change at a time (each image once), paced at RATE commits a second;
- burst: every watched image READY in one transaction (1,000 notices at once), to READY
  arriving on every stream (and each stream then ending OK);
- fan-out: 1,000 more streams, 100 on each of 10 images, one change at a time.
Target: p99 <= 100 ms with 1,000 watchers (steady and fan-out). Also printed: the server's
memory per open stream and its CPU per delivered state."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import grpc

from bench.harness import Infrastructure, Metadata, bearer, infrastructure, table, tree_cpu_seconds
from imagery.common.ids import new_image_id
from imagery.devstack.credentials import API_KEY, local_keys
from imagery.devstack.keys import ensure_key_pair
from imagery.devstack.procs import free_port
from imagery.devstack.services import ServiceProcess
from imagery.v1 import delivery_service_pb2 as pb
from imagery.v1 import delivery_service_pb2_grpc as pb_grpc
from imagery.v1 import image_pb2

WATCHERS = int(os.environ.get("BENCH_WATCHERS", "1000"))
RATE = float(os.environ.get("BENCH_WATCH_RATE", "200"))  # commits a second, steady phase
FAN_OUT_IMAGES = 10
FAN_OUT_CHANGES = 100
FAN_OUT_RATE = 20.0  # changes a second, each to 100 streams: 2,000 states a second
CHANNELS = 8  # connections the streams are spread over, as from several client pods
WAIT = 60.0  # a bound on every phase: nothing waits forever
TARGET_P99_MS = 100.0


@dataclass
class Expected:
    """A state some streams are waiting for: when its commit began, and the arrivals."""

    started: float
    streams: int
    latencies_ms: list[float] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)


class Streams:
    """Open WatchImage streams, each reporting what it receives to `expected`; a state is
    matched by (image id, mark), the mark being a label `n` or the status READY."""

    def __init__(self, channels: Sequence[grpc.aio.Channel], metadata: Metadata) -> None:
        self._channels = channels
        self._metadata = metadata
        self.expected: dict[tuple[str, str], Expected] = {}
        self.tasks: list[asyncio.Task[str]] = []
        self.opened_ms: list[float] = []

    def open(self, image_ids: Sequence[str]) -> list[asyncio.Task[str]]:
        opened = [
            asyncio.ensure_future(self._follow(self._channels[n % len(self._channels)], image_id))
            for n, image_id in enumerate(image_ids)
        ]
        self.tasks += opened
        return opened

    async def _follow(self, channel: grpc.aio.Channel, image_id: str) -> str:
        started = time.perf_counter()
        call = pb_grpc.DeliveryServiceStub(channel).WatchImage(
            pb.WatchImageRequest(image_id=image_id), metadata=self._metadata
        )
        first = True
        async for message in call:
            now = time.perf_counter()
            if first:
                self.opened_ms.append((now - started) * 1000)
                first = False
            self._arrived(image_id, _mark(message.image), now)
        return str((await call.code()).name)

    def _arrived(self, image_id: str, mark: str, now: float) -> None:
        expected = self.expected.get((image_id, mark))
        if expected is not None:
            expected.latencies_ms.append((now - expected.started) * 1000)
            if len(expected.latencies_ms) == expected.streams:
                expected.done.set()

    def expect(self, image_id: str, mark: str, streams: int = 1) -> Expected:
        expected = self.expected[(image_id, mark)] = Expected(time.perf_counter(), streams)
        return expected


def _mark(image: image_pb2.Image) -> str:
    return "READY" if image.status == image_pb2.IMAGE_STATUS_READY else image.labels.get("n", "")


@dataclass
class Phase:
    name: str
    streams: int
    images: int
    changes: int
    latencies_ms: list[float]
    missing: int = 0
    target: bool = True

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))] if ordered else 0.0


async def _seed(pool: asyncpg.Pool, count: int) -> list[str]:
    ids = [new_image_id() for _ in range(count)]
    await pool.execute(
        "INSERT INTO image_records (id, status, content_type, file_name, object_key, project_id)"
        " SELECT id, 'pending', 'image/jpeg', 'bench.jpg', 'uploads/' || id, 'default'"
        " FROM unnest($1::text[]) AS id",
        ids,
    )
    return ids


async def _until_opened(streams: Streams, opened: list[asyncio.Task[str]], count: int) -> None:
    async with asyncio.timeout(WAIT):
        while len(streams.opened_ms) < count:
            ended = [t for t in opened if t.done()]
            if ended:
                raise RuntimeError(f"a stream ended before its first state: {ended[0].result()}")
            await asyncio.sleep(0.01)


async def _settled(waits: Sequence[Expected]) -> int:
    """Wait (bounded) for every expected arrival; how many never came."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(WAIT):
            for expected in waits:
                await expected.done.wait()
    return sum(e.streams - len(e.latencies_ms) for e in waits)


async def _steady(
    streams: Streams, pool: asyncpg.Pool, ids: list[str], per: int, rate: float
) -> Phase:
    """The images in `ids` changed in turn (`per` streams watch each), `rate` commits a
    second: a stream is handed the latest state, so an image changes again only after its
    streams had time to receive the change before."""
    order = random.sample(ids, len(ids)) if per == 1 else list(ids)
    waits = []
    began = time.perf_counter()
    for n, image_id in enumerate(order):
        await asyncio.sleep(max(0.0, began + n / rate - time.perf_counter()))
        waits.append(streams.expect(image_id, str(n), per))
        await pool.execute(
            "UPDATE image_records SET labels = jsonb_build_object('n', $2::text),"
            " updated_at = now() WHERE id = $1",
            image_id,
            str(n),
        )
    missing = await _settled(waits)
    name = f"steady: one change at a time, {rate:.0f}/s"
    watched = len(set(ids))
    return Phase(name, watched * per, watched, len(order), _all(waits), missing)


async def _burst(streams: Streams, pool: asyncpg.Pool, ids: list[str]) -> Phase:
    waits = [streams.expect(image_id, "READY") for image_id in ids]
    started = time.perf_counter()
    for expected in waits:
        expected.started = started
    await pool.execute(
        "UPDATE image_records SET status = 'ready', updated_at = now() WHERE id = ANY($1::text[])",
        ids,
    )
    missing = await _settled(waits)
    name = "burst: all READY in one commit"
    return Phase(name, len(ids), len(ids), len(ids), _all(waits), missing, target=False)


def _all(waits: Sequence[Expected]) -> list[float]:
    return [ms for e in waits for ms in e.latencies_ms]


@contextlib.asynccontextmanager
async def _delivery(infra: Infrastructure, workdir: Path) -> AsyncIterator[ServiceProcess]:
    private_file, _ = ensure_key_pair(workdir, "ecdsa")
    env = {
        "DATABASE_URL": infra.dsn,
        "AWS_REGION": infra.aws.region,
        "S3_BUCKET": infra.aws.bucket,
        "CLOUDFRONT_DOMAIN": "d111111abcdef8.cloudfront.net",
        "CLOUDFRONT_KEY_PAIR_ID": "KBENCH",
        "CLOUDFRONT_PRIVATE_KEY_FILE": str(private_file),
        "DELIVERY_MAX_WATCHERS": str(2 * WATCHERS),
        "DELIVERY_MAX_WATCHERS_PER_PROJECT": str(2 * WATCHERS),  # every stream is one project's
    }
    port, log = free_port(), workdir / "delivery-watch.log"
    with ServiceProcess("delivery", "bench.delivery_server", port, log, env, echo=None) as process:
        yield process


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def run() -> tuple[list[Phase], dict[str, float]]:
    workdir = Path(tempfile.mkdtemp(prefix="imagery-bench-"))
    async with infrastructure() as infra, _delivery(infra, workdir) as process:
        assert process.proc is not None
        pid = process.proc.pid
        pool = await asyncpg.create_pool(infra.dsn, min_size=2, max_size=4)
        assert pool is not None
        metadata = bearer((await local_keys(infra.dsn))[API_KEY])
        options = [("grpc.use_local_subchannel_pool", 1)]  # a connection per channel
        channels = [
            grpc.aio.insecure_channel(f"127.0.0.1:{process.port}", options=options)
            for _ in range(CHANNELS)
        ]
        streams = Streams(channels, metadata)
        try:
            return await _phases(streams, pool, pid)
        finally:
            for task in streams.tasks:
                task.cancel()
            await asyncio.gather(*streams.tasks, return_exceptions=True)
            for channel in channels:
                await channel.close(None)
            await pool.close()


async def _phases(
    streams: Streams, pool: asyncpg.Pool, pid: int
) -> tuple[list[Phase], dict[str, float]]:
    ids = await _seed(pool, WATCHERS)
    rss_before = _rss_mib(pid)
    await _until_opened(streams, streams.open(ids), WATCHERS)
    opened = Phase(
        "open: first state of each stream",
        WATCHERS,
        WATCHERS,
        0,
        list(streams.opened_ms),
        target=False,
    )
    await asyncio.sleep(0.5)
    figures = {"rss_per_stream_kib": (_rss_mib(pid) - rss_before) * 1024 / WATCHERS}
    cpu = tree_cpu_seconds(pid)
    steady = await _steady(streams, pool, ids, 1, RATE)
    figures["cpu_ms_per_state"] = (
        (tree_cpu_seconds(pid) - cpu) * 1000 / max(1, len(steady.latencies_ms))
    )
    burst = await _burst(streams, pool, ids)
    first = streams.tasks[:WATCHERS]
    async with asyncio.timeout(WAIT):
        codes = await asyncio.gather(*first)
    figures["ended_ok"] = sum(code == "OK" for code in codes)

    fan_ids = await _seed(pool, FAN_OUT_IMAGES)
    per = WATCHERS // FAN_OUT_IMAGES
    fanned = streams.open([image_id for image_id in fan_ids for _ in range(per)])
    await _until_opened(streams, fanned, 2 * WATCHERS)
    rounds = FAN_OUT_CHANGES // FAN_OUT_IMAGES
    fan_out = await _steady(streams, pool, fan_ids * rounds, per, FAN_OUT_RATE)
    fan_out.name = f"fan-out: {per} streams per image, {FAN_OUT_RATE:.0f}/s"
    return [opened, steady, burst, fan_out], figures


def report(phases: list[Phase], figures: dict[str, float]) -> str:
    rows = [
        [
            p.name,
            p.streams,
            p.images,
            p.changes,
            len(p.latencies_ms),
            p.missing,
            p.percentile(50),
            p.percentile(99),
            max(p.latencies_ms, default=0.0),
            f"<= {TARGET_P99_MS:.0f}" if p.target else "-",
        ]
        for p in phases
    ]
    lines = [
        table(
            f"WatchImage: {WATCHERS:,} streams on one delivery process, commit -> client",
            [
                "phase",
                "streams",
                "images",
                "changes",
                "arrived",
                "missing",
                "p50 ms",
                "p99 ms",
                "max ms",
                "p99 target",
            ],
            rows,
        )
    ]
    worst = max(p.percentile(99) for p in phases if p.target)
    verdict = "meets" if worst <= TARGET_P99_MS and not any(p.missing for p in phases) else "MISSES"
    lines.append(
        f"p99 with {WATCHERS:,} watchers, worst of steady and fan-out: {worst:.1f} ms "
        f"({verdict} the target of {TARGET_P99_MS:.0f} ms); streams ended OK at READY: "
        f"{figures['ended_ok']:.0f} of {WATCHERS:,}"
    )
    lines.append(
        f"server: {figures['rss_per_stream_kib']:.1f} KiB of memory per open stream, "
        f"{figures['cpu_ms_per_state']:.2f} ms of CPU per state delivered (steady phase)"
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    print(report(*asyncio.run(run())), flush=True)


if __name__ == "__main__":
    main()
