"""Warm BatchGetDownloadUrls(50) with many tenants: 1,000,000 READY images spread over 100
projects (each with its own key), ECDSA, both caches on. Two builds of the delivery run side
by side: the production one and the bench-only one without the credential check
(`bench.unauthenticated`). Three comparisons, each in the same run:
- one project's batch, with auth / without auth (target >= 0.9);
- batches of all 100 projects in turn, each with its project's key and ids, / echo on the
  same server (target >= 0.45);
- what the replica sends to Postgres meanwhile, counted on the wire by `bench.pgwire`:
  deletion-feed and change-bus queries per second (target <= 10).
BENCH_TENANT_IMAGES and BENCH_TENANT_PROJECTS change the table (default 1,000,000 and 100)."""

from __future__ import annotations

import asyncio
import itertools
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from bench.harness import Metadata, Result, across_servers, infrastructure, table
from bench.pgwire import StatementCounter, counting_proxy
from bench.tenants import Tenant, create_tenants, sample_ids, seed_images
from bench.unauthenticated import UNAUTHENTICATED_AS_KEY
from imagery.devstack.keys import ensure_key_pair
from imagery.devstack.procs import free_port
from imagery.devstack.services import ServiceProcess
from imagery.v1 import delivery_service_pb2 as pb
from imagery.v1 import delivery_service_pb2_grpc as pb_grpc

SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
IMAGES = int(os.environ.get("BENCH_TENANT_IMAGES", "1000000"))
PROJECTS = int(os.environ.get("BENCH_TENANT_PROJECTS", "100"))
BATCH = 50
WITH_AUTH, WITHOUT_AUTH = "with auth", "without auth"
ONE, ALL = "BatchGetDownloadUrls(50), 1 project", f"BatchGetDownloadUrls(50), {PROJECTS} projects"
TARGET_AUTH, TARGET_ECHO, TARGET_QUERIES = 0.9, 0.45, 10.0
BUS_APPLICATION = "imagery-changes"  # the change bus's application_name (changes.py)
KINDS = ("feed", "bus", "credentials", "lookups", "other")


@dataclass(frozen=True)
class Outcome:
    seed_seconds: float
    comparisons: dict[str, list[Result]]  # ONE / ALL -> its echo and batch rows
    queries: dict[tuple[str, int], tuple[float, dict[str, int]]]  # (load, c) -> (s, counts)


def _category(sql: str) -> str:
    text = sql.lower()
    if "image_deletions" in text:
        return "feed"
    if any(table in text for table in ("api_keys", "client_identities", "projects")):
        return "credentials"
    return "lookups" if "image_records" in text else "other"


async def run() -> Outcome:
    workdir = Path(tempfile.mkdtemp(prefix="imagery-bench-"))
    async with infrastructure() as infra:
        started = time.perf_counter()
        tenants = await create_tenants(infra.dsn, PROJECTS)
        await seed_images(infra.dsn, tenants, IMAGES)
        ids = await sample_ids(infra.dsn, tenants, BATCH)
        seed_seconds = time.perf_counter() - started
        private_file, _ = ensure_key_pair(workdir, "ecdsa")
        env = {
            "AWS_REGION": infra.aws.region,
            "S3_BUCKET": infra.aws.bucket,
            "CLOUDFRONT_DOMAIN": "d111111abcdef8.cloudfront.net",
            "CLOUDFRONT_KEY_PAIR_ID": "KBENCH",
            "CLOUDFRONT_PRIVATE_KEY_FILE": str(private_file),
            "SIGNED_URL_CACHE_SIZE": "100000",
            "DOWNLOAD_TARGET_CACHE_SIZE": "100000",
        }
        counter = StatementCounter(_category)
        ports = free_port(), free_port()
        with (
            counting_proxy(infra.dsn, counter) as proxied,
            ServiceProcess(
                "delivery",
                "bench.delivery_server",
                ports[0],
                workdir / "auth.log",
                {**env, "DATABASE_URL": proxied},
                echo=None,
            ),
            ServiceProcess(
                "delivery-noauth",
                "bench.delivery_server",
                ports[1],
                workdir / "noauth.log",
                {**env, "DATABASE_URL": infra.dsn, UNAUTHENTICATED_AS_KEY: tenants[0].key},
                echo=None,
            ),
        ):
            comparisons = await _measure(ports, tenants, ids)
        queries = {
            (r.name, r.concurrency): (
                sum(end - start for start, end in r.windows),
                _by_kind(counter, r.windows),
            )
            for results in comparisons.values()
            for r in results
            if r.server == WITH_AUTH and r.name != "echo"
        }
        return Outcome(seed_seconds, comparisons, queries)


def _by_kind(counter: StatementCounter, windows: Sequence[tuple[float, float]]) -> dict[str, int]:
    counts = dict.fromkeys(KINDS, 0)
    for (application, category), n in counter.within(windows).items():
        kind = "bus" if application == BUS_APPLICATION else category
        counts[kind] += n
    return counts


async def _measure(
    ports: tuple[int, int], tenants: list[Tenant], ids: dict[str, list[str]]
) -> dict[str, list[Result]]:
    calls = [
        (pb.BatchGetDownloadUrlsRequest(image_ids=ids[t.project_id], variant="small"), t.metadata)
        for t in tenants
    ]
    first_request, first_metadata = calls[0]
    for port, batch in ((ports[0], calls), (ports[1], calls[:1])):  # warm both caches
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.DeliveryServiceStub(channel)
            for request, metadata in batch:
                await stub.BatchGetDownloadUrls(request, metadata=metadata)
    payload = first_request.SerializeToString()
    one = await across_servers(
        [(WITH_AUTH, ports[0]), (WITHOUT_AUTH, ports[1])],
        ONE,
        lambda channel: _rotating(channel, calls[:1]),
        payload,
        seconds=SECONDS,
        metadata=first_metadata,
    )
    every = await across_servers(
        [(WITH_AUTH, ports[0])],
        ALL,
        lambda channel: _rotating(channel, calls),
        payload,
        seconds=SECONDS,
        metadata=first_metadata,
    )
    return {ONE: one, ALL: every}


def _rotating(
    channel: grpc.aio.Channel, calls: Sequence[tuple[pb.BatchGetDownloadUrlsRequest, Metadata]]
) -> Callable[[], Awaitable[object]]:
    """Each call the next project's batch, with that project's key."""
    method = pb_grpc.DeliveryServiceStub(channel).BatchGetDownloadUrls
    turns = itertools.cycle(calls)

    def call() -> Awaitable[object]:
        request, metadata = next(turns)
        return method(request, metadata=metadata)

    return call


def report(outcome: Outcome) -> str:
    return "\n".join([*_throughput(outcome), *_auth(outcome), *_queries(outcome)])


def _throughput(outcome: Outcome) -> list[str]:
    rows, ratios = [], []
    for name, results in outcome.comparisons.items():
        by_key = {(r.server, r.name, r.concurrency): r for r in results}
        for r in results:
            ratio = r.rps / by_key[(r.server, "echo", r.concurrency)].rps
            if name == ALL and r.name == ALL:
                ratios.append(ratio)
            rows.append(
                [r.server, r.name, r.concurrency, r.rps, r.percentile(50), r.percentile(99), ratio]
            )
    worst = min(ratios)
    return [
        table(
            f"DeliveryService, warm, ECDSA: {IMAGES:,} images over {PROJECTS} projects "
            f"(seeded in {outcome.seed_seconds:.0f} s; {SECONDS:.0f} s per row)",
            ["server", "rpc", "concurrency", "RPC/s", "p50 ms", "p99 ms", "ratio to echo"],
            rows,
        ),
        f"warm batch over {PROJECTS} projects / echo, lowest: {worst:.2f}: "
        f"{_verdict(worst >= TARGET_ECHO)} the target of {TARGET_ECHO}",
        "",
    ]


def _auth(outcome: Outcome) -> list[str]:
    one = {(r.server, r.concurrency): r.rps for r in outcome.comparisons[ONE] if r.name == ONE}
    rows = [
        [
            c,
            one[(WITH_AUTH, c)],
            one[(WITHOUT_AUTH, c)],
            one[(WITH_AUTH, c)] / one[(WITHOUT_AUTH, c)],
        ]
        for c in sorted({c for _, c in one})
    ]
    worst = min(one[(WITH_AUTH, c)] / one[(WITHOUT_AUTH, c)] for _, c in one)
    return [
        table(
            "Warm BatchGetDownloadUrls(50) of one project, with auth / without auth "
            "(same run, the same key sent to both)",
            ["concurrency", "RPC/s with auth", "RPC/s without", "with / without"],
            rows,
        ),
        f"lowest with / without auth: {worst:.2f}: "
        f"{_verdict(worst >= TARGET_AUTH)} the target of {TARGET_AUTH}",
        "",
    ]


def _queries(outcome: Outcome) -> list[str]:
    rows = [
        [name, c, seconds, *(counts[kind] / seconds for kind in KINDS)]
        for (name, c), (seconds, counts) in outcome.queries.items()
    ]
    worst = max(
        (counts["feed"] + counts["bus"]) / seconds for seconds, counts in outcome.queries.values()
    )
    return [
        table(
            "Statements the delivery replica (with auth) sent to Postgres during the warm "
            "batch rows above",
            ["load", "concurrency", "seconds", *(f"{kind} q/s" for kind in KINDS)],
            rows,
        ),
        *_METHOD,
        f"feed + bus queries/s per replica, highest: {worst:.2f}: "
        f"{_verdict(worst <= TARGET_QUERIES)} the target of <= {TARGET_QUERIES:.0f}",
        "",
    ]


_METHOD = (
    "# counted on the wire by a proxy between the replica and Postgres (bench/pgwire.py):",
    "# every statement the replica sends (simple Query, extended-protocol Execute), by",
    "# connection (application_name) and SQL text. feed: statements naming image_deletions;",
    "# bus: statements on the change-bus connection (its heartbeat); credentials: key and",
    "# project loads and last-used writes; lookups: image_records reads; other: the rest.",
)


def _verdict(ok: bool) -> str:
    return "meets" if ok else "MISSES"


def main() -> None:
    print(report(asyncio.run(run())), flush=True)


if __name__ == "__main__":
    main()
