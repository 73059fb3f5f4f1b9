"""Verified uploads per second through the real path — PUT to the bucket, S3 event on the
queue, the processor process, terminal state in Postgres — for a 12 MP JPEG and a 1 MP PNG,
with the stage breakdown from the processor's own outcome log lines, the peak RSS of the
job processes, a pixel-flood PNG's peak RSS next to its decoded size, and what the
placeholders, colours and pHash add to each job (`bench/insights.py`)."""

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

from bench.harness import infrastructure, table
from bench.insights import cost_table
from imagery.devstack.pipeline import Pipeline

COUNT = int(os.environ.get("BENCH_UPLOADS", "16"))
MB = 1024 * 1024
STAGES = ("download", "hash", "check", "verify", "reserve", "store", "commit", "cleanup")


def photo_image(width: int, height: int, noise: float) -> Image.Image:
    """Photo-like content: gradients, a fractal and sensor-like noise (compresses like a photo)."""
    bands = [
        Image.linear_gradient("L").resize((width, height)),
        Image.effect_mandelbrot((width, height), (-2, -1.2, 1, 1.2), 60),
        Image.effect_noise((width, height), noise),
    ]
    return Image.merge("RGB", bands)


def encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **({"quality": 88} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def photo(width: int, height: int, fmt: str) -> bytes:
    return encode(photo_image(width, height, 12 if fmt == "JPEG" else 4), fmt)


def distinct(base: Image.Image, fmt: str, count: int) -> list[bytes]:
    """`count` different files (a small mark moves), so none is deduplicated away."""
    files = []
    for i in range(count):
        marked = base.copy()
        marked.paste((i * 37 % 256, 255, 0), (16 * i, 16, 16 * i + 12, 28))
        files.append(encode(marked, fmt))
    return files


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
    pipeline: Pipeline, log_path: Path, name: str, bodies: list[bytes], content_type: str
) -> list[object]:
    started = time.perf_counter()
    submitted: dict[str, float] = {}
    for body in bodies:
        image_id = await pipeline.submit(body, content_type)
        submitted[image_id] = time.time()
    records = await pipeline.wait_terminal(list(submitted), within=600)
    elapsed = time.perf_counter() - started
    assert {r["status"] for r in records.values()} == {"ready"}, records
    latencies = [(records[i]["updated_at"].timestamp() - t) * 1000 for i, t in submitted.items()]
    outcomes = _outcomes(log_path, set(submitted))
    stages = {s: statistics.mean(o["stages_ms"].get(s, 0) for o in outcomes) for s in STAGES}
    rss = max(o["job_peak_rss_bytes"] or 0 for o in outcomes) / MB
    size = statistics.mean(len(b) for b in bodies) / MB
    throughput, p50 = COUNT / elapsed, statistics.median(latencies)
    return [name, f"{size:.1f} MB", COUNT, throughput, p50, *(stages[s] for s in STAGES), rss]


async def run() -> str:
    workdir = Path(tempfile.mkdtemp(prefix="imagery-bench-"))
    async with infrastructure() as infra:
        pipeline = Pipeline(infra.dsn, infra.aws, workdir)
        jpegs = distinct(photo_image(4000, 3000, 12), "JPEG", COUNT)
        pngs = distinct(photo_image(1000, 1000, 4), "PNG", COUNT)
        cores = str(os.cpu_count() or 2)
        with pipeline.processor(
            PROCESSOR_JOB_SLOTS=cores, PROCESSOR_CONCURRENCY=str(2 * int(cores)), LOG_FORMAT="json"
        ) as processor:
            rows = [
                await _measure(pipeline, processor.log_path, "12 MP JPEG", jpegs, "image/jpeg"),
                await _measure(pipeline, processor.log_path, "1 MP PNG", pngs, "image/png"),
            ]
            flood_id = await pipeline.submit(pixel_flood(), "image/png")
            (flood,) = (await pipeline.wait_terminal([flood_id])).values()
            (flood_outcome,) = _outcomes(processor.log_path, {flood_id})
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
                    *(f"{stage} ms" for stage in STAGES),
                    "peak job RSS MiB",
                ],
                rows,
            ),
            f"pixel flood (30000x30000 PNG, {len(pixel_flood())} bytes): "
            f"{flood['failure_reason']}, job peak RSS {flood_rss:.0f} MiB "
            f"vs {decoded:,.0f} MiB decoded ({flood_rss / decoded:.3%})",
            "",
            cost_table(
                [("12 MP JPEG", jpegs[0], "image/jpeg"), ("1 MP PNG", pngs[0], "image/png")]
            ),
            "",
        ]
    )


def main() -> None:
    print(asyncio.run(run()), flush=True)


if __name__ == "__main__":
    main()
