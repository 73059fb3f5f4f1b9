"""Load generation and reporting shared by the benchmarks: a closed loop of `concurrency`
workers calling one RPC for a fixed time, with RPC/s and latency percentiles."""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import grpc

from bench.echo import ECHO_METHOD
from imagery.devstack.aws import AwsResources
from imagery.devstack.fixtures import AwsServer, PostgresServer


@dataclass(frozen=True)
class Infrastructure:
    dsn: str  # a fresh, migrated database
    aws: AwsResources  # a bucket, queue and DLQ of its own
    aws_server: AwsServer


@contextlib.asynccontextmanager
async def infrastructure() -> AsyncIterator[Infrastructure]:
    """Real Postgres and S3/SQS for one benchmark, stopped afterwards (as the tests use them)."""
    pg, aws_server = PostgresServer.start(), AwsServer.start()
    try:
        await pg.prepare_template()
        yield Infrastructure(await pg.new_database(), aws_server.new_resources(), aws_server)
    finally:
        aws_server.stop()
        pg.stop()


@dataclass(frozen=True)
class Result:
    name: str
    concurrency: int
    calls: int
    seconds: float
    latencies_ms: list[float]
    server: str = ""  # which server build answered, when a benchmark compares builds
    windows: tuple[tuple[float, float], ...] = ()  # perf_counter spans measured

    @property
    def rps(self) -> float:
        return self.calls / self.seconds

    def percentile(self, p: float) -> float:
        if len(self.latencies_ms) < 2:
            return self.latencies_ms[0] if self.latencies_ms else float("nan")
        return statistics.quantiles(self.latencies_ms, n=100, method="inclusive")[int(p) - 1]


async def closed_loop(
    name: str,
    call: Callable[[], Awaitable[object]],
    *,
    concurrency: int,
    seconds: float,
    warmup: float = 1.0,
) -> Result:
    """Run `concurrency` workers back to back for `warmup` (discarded) then `seconds`."""

    async def worker(until: float, sink: list[float] | None) -> None:
        while (now := time.perf_counter()) < until:
            await call()
            if sink is not None:
                sink.append((time.perf_counter() - now) * 1000)

    await asyncio.gather(*(worker(time.perf_counter() + warmup, None) for _ in range(concurrency)))
    latencies: list[float] = []
    started = time.perf_counter()
    await asyncio.gather(*(worker(started + seconds, latencies) for _ in range(concurrency)))
    ended = time.perf_counter()
    return Result(
        name, concurrency, len(latencies), ended - started, latencies, windows=((started, ended),)
    )


Metadata = Sequence[tuple[str, str]]
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "4"))
MakeCall = Callable[[grpc.aio.Channel], Callable[[], Awaitable[object]]]


def bearer(key: str) -> Metadata:
    return (("authorization", f"Bearer {key}"),)


async def against_echo(
    port: int,
    name: str,
    make_call: MakeCall,
    echo_payload: bytes,
    *,
    seconds: float,
    concurrencies: Sequence[int] = (1, 16),
    metadata: Metadata = (),
) -> list[Result]:
    """For each concurrency: the echo RPC (sent with `metadata`), then the RPC under test,
    on one channel (`across_servers` with one server)."""
    return await across_servers(
        [("", port)],
        name,
        make_call,
        echo_payload,
        seconds=seconds,
        concurrencies=concurrencies,
        metadata=metadata,
    )


async def across_servers(
    servers: Sequence[tuple[str, int]],
    name: str,
    make_call: MakeCall,
    echo_payload: bytes,
    *,
    seconds: float,
    concurrencies: Sequence[int] = (1, 16),
    metadata: Metadata = (),
    rounds: int = ROUNDS,
) -> list[Result]:
    """For each concurrency: echo, then the RPC under test, on each (label, port) in turn,
    each server on a channel of its own; `seconds` per row, in `rounds` slices taken in the
    order A B, B A, A B, ... and summed. On a small machine the load generator and the servers
    share the cores and the rate drifts by more than the differences measured here: taking
    the rows in alternating slices spreads the drift over all of them."""
    slices: dict[tuple[str, str, int], list[Result]] = {}
    async with contextlib.AsyncExitStack() as stack:
        channels = [
            (label, await stack.enter_async_context(grpc.aio.insecure_channel(f"127.0.0.1:{p}")))
            for label, p in servers
        ]
        for concurrency in concurrencies:
            for n in range(rounds):
                for label, channel in channels if n % 2 == 0 else channels[::-1]:
                    for rpc, call in (
                        ("echo", echo_call(channel, echo_payload, metadata)),
                        (name, make_call(channel)),
                    ):
                        result = await closed_loop(
                            rpc,
                            call,
                            concurrency=concurrency,
                            seconds=seconds / rounds,
                            warmup=1.0 if n == 0 else 0.2,
                        )
                        slices.setdefault((label, rpc, concurrency), []).append(result)
    return [
        Result(
            rpc,
            concurrency,
            sum(r.calls for r in parts),
            sum(r.seconds for r in parts),
            [ms for r in parts for ms in r.latencies_ms],
            label,
            tuple(w for r in parts for w in r.windows),
        )
        for (label, rpc, concurrency), parts in slices.items()
    ]


def echo_call(
    channel: grpc.aio.Channel, payload: bytes, metadata: Metadata = ()
) -> Callable[[], Awaitable[object]]:
    echo = channel.unary_unary(ECHO_METHOD, request_serializer=None, response_deserializer=None)
    return partial(echo, payload, metadata=metadata)


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds used so far by a process and its descendants, those it has reaped
    included (Linux /proc; a job process forked and reaped by a forkserver child counts)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = sum(int(f) for f in fields[11:15]) / tick
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        children = [p for p, pp in parents.items() if pp == parent and p not in tree]
        tree.update(children)
        frontier.extend(children)
    return sum(times.get(p, 0.0) for p in tree)


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = "  ".join("-" * w for w in widths)
    out = [title, line]
    for i, row in enumerate(cells):
        out.append(
            "  ".join(
                c.rjust(w) if j else c.ljust(w)
                for j, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if i == 0:
            out.append(line)
    return "\n".join(out)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    return str(value)
