"""CreateUploadUrl over a real socket at concurrency 1 and 16, each next to an echo RPC on
the same server, on two builds of the server running side by side in the same run: the
production one (every call authenticated with an API key) and a bench-only one without the
credential check (`bench.unauthenticated`). Prints RPC/s, p50, p99, the ratio to echo
(target >= 0.35, with auth) and the ratio with auth / without auth (target >= 0.9)."""

from __future__ import annotations

import asyncio
import os
import tempfile
from functools import partial
from pathlib import Path

from bench.harness import Result, across_servers, bearer, infrastructure, table
from bench.unauthenticated import UNAUTHENTICATED_AS_KEY
from imagery.devstack.credentials import API_KEY, local_keys
from imagery.devstack.procs import free_port
from imagery.devstack.services import ServiceProcess
from imagery.v1 import upload_service_pb2 as pb
from imagery.v1 import upload_service_pb2_grpc as pb_grpc

SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
TARGET_RATIO = 0.35
TARGET_AUTH_RATIO = 0.9
WITH_AUTH, WITHOUT_AUTH = "with auth", "without auth"
RPC = "CreateUploadUrl"


async def run() -> list[Result]:
    async with infrastructure() as infra:
        key = (await local_keys(infra.dsn))[API_KEY]
        env = {
            "DATABASE_URL": infra.dsn,
            "AWS_ENDPOINT_URL": infra.aws.endpoint_url,
            "AWS_REGION": infra.aws.region,
            "S3_BUCKET": infra.aws.bucket,
        }
        workdir = Path(tempfile.mkdtemp(prefix="imagery-bench-"))
        ports = free_port(), free_port()
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
        ):
            return await _measure(ports, key)


async def _measure(ports: tuple[int, int], key: str) -> list[Result]:
    request = pb.CreateUploadUrlRequest(
        content_type="image/jpeg", file_name="holiday-photo-0001.jpg"
    )
    metadata = bearer(key)  # sent to both builds: only the server's check differs
    return await across_servers(
        [(WITH_AUTH, ports[0]), (WITHOUT_AUTH, ports[1])],
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
    auth_rows: list[list[object]] = []
    auth_ratios = []
    for name in (RPC, "echo"):
        for c in concurrencies:
            authed, bare = by_key[(WITH_AUTH, name, c)].rps, by_key[(WITHOUT_AUTH, name, c)].rps
            auth_rows.append([name, c, authed, bare, authed / bare])
            if name == RPC:
                auth_ratios.append(authed / bare)
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
        ]
    )


def _verdict(value: float, target: float) -> str:
    return "meets" if value >= target else "MISSES"


def main() -> None:
    print(report(asyncio.run(run())), flush=True)


if __name__ == "__main__":
    main()
