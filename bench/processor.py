"""Verified uploads per second through the real path — PUT to the bucket, S3 event on the
queue, the processor process, terminal state in Postgres — for a 12 MP JPEG and a 1 MP PNG,
with the stage breakdown from the processor's own outcome log lines, the peak RSS of the
job processes, and a pixel-flood PNG's peak RSS next to its decoded size."""

from __future__ import annotations

import asyncio
import io
import json
import os
import statistics
import struct
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

from PIL import Image

from bench.harness import table
from imagery.devstack.fixtures import AwsServer, PostgresServer
from imagery.devstack.pipeline import Pipeline

COUNT = int(os.environ.get("BENCH_UPLOADS", "16"))
MB = 1024 * 1024
STAGES = ("head", "download", "verify", "commit", "cleanup")


def photo(width: int, height: int, fmt: str) -> bytes:
    """Photo-like content: gradients, a fractal and sensor-like noise (compresses like a photo)."""
    bands = [
        Image.linear_gradient("L").resize((width, height)),
        Image.effect_mandelbrot((width, height), (-2, -1.2, 1, 1.2), 60),
        Image.effect_noise((width, height), 12 if fmt == "JPEG" else 4),
    ]
    buffer = io.BytesIO()
    Image.merge("RGB", bands).save(buffer, fmt, **({"quality": 88} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def pixel_flood(side: int = 30_000) -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload))
            + kind
            + payload
            + struct.pack(">I", zlib.crc32(kind + payload))
        )

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 193))
        + chunk(b"IEND", b"")
    )


def _outcomes(log_path: Path, ids: set[str]) -> list[dict[str, Any]]:
    lines = (
        json.loads(line)
        for line in log_path.read_text().splitlines()
        if '"upload processed"' in line
    )
    return [line for line in lines if line.get("image_id") in ids]


async def _measure(
    pipeline: Pipeline, log_path: Path, name: str, body: bytes, content_type: str
) -> list[object]:
    started = time.perf_counter()
    submitted: dict[str, float] = {}
    for _ in range(COUNT):
        image_id = await pipeline.submit(body, content_type)
        submitted[image_id] = time.time()
    records = await pipeline.wait_terminal(list(submitted), within=600)
    elapsed = time.perf_counter() - started
    assert {r["status"] for r in records.values()} == {"ready"}, records
    latencies = [(records[i]["updated_at"].timestamp() - t) * 1000 for i, t in submitted.items()]
    outcomes = _outcomes(log_path, set(submitted))
    stages = {
        s: statistics.mean(o["stages_ms"].get(s, 0) for o in outcomes)
        for s in ("head", "download", "verify", "commit", "cleanup")
    }
    rss = max(o["job_peak_rss_bytes"] for o in outcomes) / MB
    return [
        name,
        f"{len(body) / MB:.1f} MB",
        COUNT,
        COUNT / elapsed,
        statistics.median(latencies),
        *(stages[s] for s in ("head", "download", "verify", "commit", "cleanup")),
        rss,
    ]


async def run() -> str:
    pg, aws_server = PostgresServer.start(), AwsServer.start()
    workdir = Path(tempfile.mkdtemp(prefix="imagery-bench-"))
    try:
        await pg.prepare_template()
        pipeline = Pipeline(await pg.new_database(), aws_server.new_resources(), workdir)
        processor = pipeline.processor(
            PROCESSOR_CONCURRENCY=str(os.cpu_count() or 2), LOG_FORMAT="json"
        )
        try:
            rows = [
                await _measure(
                    pipeline,
                    processor.log_path,
                    "12 MP JPEG",
                    photo(4000, 3000, "JPEG"),
                    "image/jpeg",
                ),
                await _measure(
                    pipeline, processor.log_path, "1 MP PNG", photo(1000, 1000, "PNG"), "image/png"
                ),
            ]
            flood_id = await pipeline.submit(pixel_flood(), "image/png")
            (flood,) = (await pipeline.wait_terminal([flood_id])).values()
            (flood_outcome,) = _outcomes(processor.log_path, {flood_id})
        finally:
            processor.stop()
    finally:
        aws_server.stop()
        pg.stop()
    decoded = 30_000 * 30_000 * 3 / MB
    flood_rss = (flood_outcome["job_peak_rss_bytes"] or 0) / MB
    return "\n".join(
        [
            table(
                f"Processor: verified uploads through the real path "
                f"({os.cpu_count()} job slots, {COUNT} uploads each)",
                [
                    "file",
                    "size",
                    "uploads",
                    "uploads/s",
                    "p50 PUT->ready ms",
                    "head ms",
                    "download ms",
                    "verify ms",
                    "commit ms",
                    "cleanup ms",
                    "peak job RSS MiB",
                ],
                rows,
            ),
            f"pixel flood (30000x30000 PNG, {len(pixel_flood())} bytes): "
            f"{flood['failure_reason']}, job peak RSS {flood_rss:.0f} MiB "
            f"vs {decoded:,.0f} MiB decoded ({flood_rss / decoded:.3%})",
            "",
        ]
    )


def main() -> None:
    print(asyncio.run(run()), flush=True)


if __name__ == "__main__":
    main()
