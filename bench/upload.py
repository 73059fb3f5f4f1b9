"""CreateUploadUrl over a real socket at concurrency 1 and 16, next to an echo RPC on the
same server in the same run: RPC/s, p50, p99 and the ratio (target >= 0.35)."""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

from bench.harness import Result, against_echo, infrastructure, table
from imagery.devstack.procs import free_port
from imagery.devstack.services import ServiceProcess
from imagery.v1 import upload_service_pb2 as pb
from imagery.v1 import upload_service_pb2_grpc as pb_grpc

SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
TARGET_RATIO = 0.35


async def run() -> list[Result]:
    async with infrastructure() as infra:
        env = {
            "DATABASE_URL": infra.dsn,
            "AWS_ENDPOINT_URL": infra.aws.endpoint_url,
            "AWS_REGION": infra.aws.region,
            "S3_BUCKET": infra.aws.bucket,
        }
        port = free_port()
        log = Path(tempfile.mkdtemp()) / "upload-bench.log"
        with ServiceProcess("upload", "bench.upload_server", port, log, env, echo=None):
            return await _measure(port)


async def _measure(port: int) -> list[Result]:
    request = pb.CreateUploadUrlRequest(
        content_type="image/jpeg", file_name="holiday-photo-0001.jpg"
    )
    return await against_echo(
        port,
        "CreateUploadUrl",
        lambda channel: lambda: pb_grpc.UploadServiceStub(channel).CreateUploadUrl(request),
        request.SerializeToString(),
        seconds=SECONDS,
    )


def report(results: list[Result]) -> str:
    rows = []
    by_key = {(r.name, r.concurrency): r for r in results}
    for r in results:
        echo = by_key[("echo", r.concurrency)]
        rows.append(
            [
                r.name,
                r.concurrency,
                r.calls,
                r.rps,
                r.percentile(50),
                r.percentile(99),
                r.rps / echo.rps,
            ]
        )
    worst = min(by_key[("CreateUploadUrl", c)].rps / by_key[("echo", c)].rps for c in (1, 16))
    verdict = "meets" if worst >= TARGET_RATIO else "MISSES"
    return (
        table(
            f"UploadService: CreateUploadUrl vs echo on the same server "
            f"({SECONDS:.0f} s per row, one server process)",
            ["rpc", "concurrency", "calls", "RPC/s", "p50 ms", "p99 ms", "ratio to echo"],
            rows,
        )
        + f"\nlowest ratio {worst:.2f}: {verdict} the target of {TARGET_RATIO}\n"
    )


def main() -> None:
    print(report(asyncio.run(run())), flush=True)


if __name__ == "__main__":
    main()
