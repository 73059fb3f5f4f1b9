"""Ingest capacity: how fast a burst of distinct photos drains through the real path (PUT to the
bucket, S3 event, the processor process on every core, READY in Postgres), for 3 MP and 12 MP
JPEGs, with the presets rendered at ingest before issue 17 (all five) and with today's default
profile (`large` and `original` rendered on their first request). Target (issue 17): the new
defaults drain at least 2x as fast as the old ones."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path

from bench.harness import infrastructure, table
from bench.processor import distinct, photo_image
from imagery.common.presets import DEFAULT_PRESETS_SPEC
from imagery.devstack.pipeline import Pipeline

BURST = int(os.environ.get("BENCH_BURST", "40"))
OLD_DEFAULTS = "thumbnail:150x150:crop,small:400x400,medium:800x800,large:1600x1600,original:full"
SIZES = (("3 MP JPEG", 2000, 1500), ("12 MP JPEG", 4000, 3000))
TARGET = 2.0
LONG_POLL_SECONDS = 20


async def _drain(pipeline: Pipeline, bodies: list[bytes]) -> float:
    """Uploads per second from the first PUT to the last READY."""
    started = time.perf_counter()
    ids = [await pipeline.submit(body, "image/jpeg") for body in bodies]
    records = await pipeline.wait_terminal(ids, within=1800)
    elapsed = time.perf_counter() - started
    assert {r["status"] for r in records.values()} == {"ready"}, records
    return len(ids) / elapsed


async def run() -> str:
    workdir = Path(tempfile.mkdtemp(prefix="imagery-bench-ingest-"))
    cores = str(os.cpu_count() or 2)
    rows: list[list[object]] = []
    async with infrastructure() as infra:
        pipeline = Pipeline(infra.dsn, infra.aws, workdir)
        for label, width, height in SIZES:
            rates: list[float] = []
            for seed, spec in enumerate((OLD_DEFAULTS, DEFAULT_PRESETS_SPEC)):
                base = photo_image(width, height, 12)
                base.putpixel((0, 0), (seed, len(rates), 7))  # no dedup across runs
                bodies = distinct(base, "JPEG", BURST)
                with pipeline.processor(
                    VARIANT_PRESETS=spec,
                    PROCESSOR_JOB_SLOTS=cores,
                    PROCESSOR_CONCURRENCY=str(2 * int(cores)),
                    # one project's burst: no fairness deferrals, whose jittered returns would
                    # measure the deferral schedule rather than the processing
                    PROCESSOR_PROJECT_MAX_IN_FLIGHT=str(2 * int(cores)),
                ):
                    rates.append(await _drain(pipeline, bodies))
                # A stopped processor's last long poll may still take a message server-side
                # (it then stays invisible for the visibility timeout): let it expire first.
                await asyncio.sleep(LONG_POLL_SECONDS + 1)
            ratio = rates[1] / rates[0]
            verdict = "met" if ratio >= TARGET else "MISSED"
            rows.append([label, BURST, rates[0], rates[1], f"{ratio:.2f}x", verdict])
    return table(
        f"Ingest capacity: a burst of {BURST} distinct photos, {cores} job slots "
        f"(target: new defaults >= {TARGET:g}x the old)",
        ["photo", "uploads", "old defaults uploads/s", "new defaults uploads/s", "new/old", ""],
        rows,
    )


def main() -> None:
    print(asyncio.run(run()), flush=True)


if __name__ == "__main__":
    main()
