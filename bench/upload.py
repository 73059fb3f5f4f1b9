"""CreateUploadUrl over a real socket at concurrency 1 and 16, each next to an echo RPC on
the same server, on two builds of the server running side by side in the same run: the
production one (every call authenticated with an API key) and a bench-only one without the
credential check (`bench.unauthenticated`), and a third with admission control switched on:
rate limits counted in Redis and all three quotas enforced (limits high enough never to
refuse, so every call pays for the counting and the quota check). Prints RPC/s, p50, p99, the
ratio to echo (target >= 0.35, with auth), with auth / without auth (target >= 0.9) and with
limits and quotas / without them (target >= 0.9)."""

from __future__ import annotations

import asyncio
import os
import tempfile
from functools import partial
from pathlib import Path

from bench.harness import Result, across_servers, bearer, infrastructure, table
from bench.unauthenticated import UNAUTHENTICATED_AS_KEY
from imagery.devstack.credentials import API_KEY, local_keys
from imagery.devstack.fixtures import RedisServer
from imagery.devstack.procs import free_port
from imagery.devstack.services import ServiceProcess
from imagery.v1 import upload_service_pb2 as pb
from imagery.v1 import upload_service_pb2_grpc as pb_grpc

SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
TARGET_RATIO = 0.35
TARGET_AUTH_RATIO = 0.9
TARGET_LIMITS_RATIO = 0.9
WITH_AUTH, WITHOUT_AUTH, WITH_LIMITS = "with auth", "without auth", "with limits+quotas"
# High enough never to refuse in a bench run, so every call is counted and admitted.
ADMISSION = {
    "PROJECT_RATE_CREATE_PER_MINUTE_DEFAULT": "100000000",
    "PROJECT_RATE_READ_PER_MINUTE_DEFAULT": "100000000",
    "PROJECT_QUOTA_IMAGES_DEFAULT": "1000000000",
    "PROJECT_QUOTA_BYTES_DEFAULT": str(10**15),
    "PROJECT_QUOTA_UPLOADS_PER_DAY_DEFAULT": "1000000000",
}
RPC = "CreateUploadUrl"


async def run() -> list[Result]:
    redis = RedisServer.start()
    try:
        return await _run(redis.url)
    finally:
        redis.stop()


async def _run(redis_url: str) -> list[Result]:
    async with infrastructure() as infra:
        key = (await local_keys(infra.dsn))[API_KEY]
        env = {
            "DATABASE_URL": infra.dsn,
            "AWS_ENDPOINT_URL": infra.aws.endpoint_url,
            "AWS_REGION": infra.aws.region,
            "S3_BUCKET": infra.aws.bucket,
        }
        workdir = Path(tempfile.mkdtemp(prefix="imagery-bench-"))
        ports = free_port(), free_port(), free_port()
        with (
            ServiceProcess(
                "upload", "bench.upload_server", ports[0], workdir / "auth.log", env, echo=None
            ),
            ServiceProcess(
                "upload-noauth",
                "bench.upload_server",
                ports[1],
                workdir / "noauth.log",
                {**env, UNAUTHENTICATED_AS_KEY: key},
                echo=None,
            ),
            ServiceProcess(
                "upload-limits",
                "bench.upload_server",
                ports[2],
                workdir / "limits.log",
                {**env, **ADMISSION, "REDIS_URL": redis_url},
                echo=None,
            ),
        ):
            return await _measure(ports, key)


async def _measure(ports: tuple[int, int, int], key: str) -> list[Result]:
    request = pb.CreateUploadUrlRequest(
        content_type="image/jpeg", file_name="holiday-photo-0001.jpg"
    )
    metadata = bearer(key)  # sent to both builds: only the server's check differs
    return await across_servers(
        [(WITH_AUTH, ports[0]), (WITHOUT_AUTH, ports[1]), (WITH_LIMITS, ports[2])],
        RPC,
        lambda channel: partial(
            pb_grpc.UploadServiceStub(channel).CreateUploadUrl, request, metadata=metadata
        ),
        request.SerializeToString(),
        seconds=SECONDS,
        metadata=metadata,
    )


def report(results: list[Result]) -> str:
    by_key = {(r.server, r.name, r.concurrency): r for r in results}
    concurrencies = sorted({r.concurrency for r in results})
    rows = [
        [
            r.server,
            r.name,
            r.concurrency,
            r.calls,
            r.rps,
            r.percentile(50),
            r.percentile(99),
            r.rps / by_key[(r.server, "echo", r.concurrency)].rps,
        ]
        for r in results
    ]
    auth_rows, auth_ratios = _compare(by_key, concurrencies, WITH_AUTH, WITHOUT_AUTH)
    limit_rows, limit_ratios = _compare_to_echo(by_key, concurrencies, WITH_LIMITS, WITH_AUTH)
    worst = min(
        by_key[(WITH_AUTH, RPC, c)].rps / by_key[(WITH_AUTH, "echo", c)].rps for c in concurrencies
    )
    worst_auth = min(auth_ratios)
    return "\n".join(
        [
            table(
                f"UploadService: CreateUploadUrl vs echo on the same server "
                f"({SECONDS:.0f} s per row; both builds running, measured in turn)",
                [
                    *("server", "rpc", "concurrency", "calls", "RPC/s", "p50 ms", "p99 ms"),
                    "ratio to echo",
                ],
                rows,
            ),
            f"lowest ratio to echo, with auth: {worst:.2f}: "
            f"{_verdict(worst, TARGET_RATIO)} the target of {TARGET_RATIO}",
            "",
            table(
                "UploadService with auth / without auth (same run; the same key sent to both)",
                ["rpc", "concurrency", "RPC/s with auth", "RPC/s without", "with / without"],
                auth_rows,
            ),
            f"lowest CreateUploadUrl with / without auth: {worst_auth:.2f}: "
            f"{_verdict(worst_auth, TARGET_AUTH_RATIO)} the target of {TARGET_AUTH_RATIO}",
            "",
            table(
                "UploadService with rate limits (Redis) and quotas / without: CreateUploadUrl/echo "
                "of each server (same run, both authenticated)",
                [
                    *("concurrency", "RPC/s with", "echo with", "ratio with"),
                    *("RPC/s without", "echo without", "ratio without", "with / without"),
                ],
                limit_rows,
            ),
            f"lowest CreateUploadUrl/echo with / without limits and quotas: "
            f"{min(limit_ratios):.2f}: "
            f"{_verdict(min(limit_ratios), TARGET_LIMITS_RATIO)} the target of "
            f"{TARGET_LIMITS_RATIO}",
            "",
        ]
    )


def _compare(
    by_key: dict[tuple[str, str, int], Result], concurrencies: list[int], this: str, that: str
) -> tuple[list[list[object]], list[float]]:
    rows: list[list[object]] = []
    ratios = []
    for name in (RPC, "echo"):
        for c in concurrencies:
            mine, theirs = by_key[(this, name, c)].rps, by_key[(that, name, c)].rps
            rows.append([name, c, mine, theirs, mine / theirs])
            if name == RPC:
                ratios.append(mine / theirs)
    return rows, ratios


def _compare_to_echo(
    by_key: dict[tuple[str, str, int], Result], concurrencies: list[int], this: str, that: str
) -> tuple[list[list[object]], list[float]]:
    """CreateUploadUrl/echo on each server, and their ratio: each server's echo, measured in
    the same slices, takes out what the machine was doing at the time."""
    rows: list[list[object]] = []
    ratios = []
    for c in concurrencies:
        cells: list[object] = [c]
        share = []
        for server in (this, that):
            rpc, echo = by_key[(server, RPC, c)].rps, by_key[(server, "echo", c)].rps
            cells += [rpc, echo, rpc / echo]
            share.append(rpc / echo)
        ratios.append(share[0] / share[1])
        rows.append([*cells, ratios[-1]])
    return rows, ratios


def _verdict(value: float, target: float) -> str:
    return "meets" if value >= target else "MISSES"


def main() -> None:
    print(report(asyncio.run(run())), flush=True)


if __name__ == "__main__":
    main()
