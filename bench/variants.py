"""Variant making for one 12 MP JPEG, three ways on the same file and the same outputs, one
core, in this process: ours (verification included), the issue's naive Pillow pipeline (full
decode, then a copy and a LANCZOS resize from full size per output) and pyvips (libvips,
shrink-on-load); then the full path (PUT -> S3 event -> processor -> READY) at steady state on
all cores, per image, next to ours in process.

Two output sets: the issue's three sizes (thumbnail 150 crop, small 400, medium 800 -- its
"4000x3000 photo into 800x800 gets no draft" trap names 800 as the largest; its figures, naive
~710 ms / draft pipeline ~150 ms / pyvips ~185 ms, are what this machine measures for these
sizes), and our five defaults (adding large 1600 and the full-size original, where encoding
dominates every pipeline: one 1600x1200 WebP at method 4 alone costs ~166 ms here).
Targets (issue 5): ours <= 0.25x naive and <= 0.9x pyvips; full path <= 1.25x in process."""

from __future__ import annotations

import asyncio
import io
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyvips
from PIL import Image, ImageOps

from bench.harness import infrastructure, table, tree_cpu_seconds
from bench.processor import distinct, photo, photo_image
from imagery.common.presets import DEFAULT_PRESETS, DEFAULT_PRESETS_SPEC, Preset
from imagery.devstack.pipeline import Pipeline
from imagery.processor.adapters.render import verify_and_render
from imagery.processor.imaging import Limits, RenderSpec

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
UPLOADS = int(os.environ.get("BENCH_UPLOADS", "24"))
PATH_RUNS = 3
THREE_SIZES = tuple(p for p in DEFAULT_PRESETS if p.name in ("thumbnail", "small", "medium"))
THREE_SIZES_SPEC = "thumbnail:150x150:crop,small:400x400,medium:800x800"
WEBP_Q, WEBP_EFFORT, JPEG_Q = 80, 4, 85


def ours(data: bytes, presets: tuple[Preset, ...]) -> int:
    processed = verify_and_render(data, "image/jpeg", Limits(), RenderSpec(presets=presets))
    return len(processed.variants)


def naive(data: bytes, presets: tuple[Preset, ...]) -> int:
    """The issue's naive pipeline: full decode, then per output a copy of the full image and
    one LANCZOS resize from full size (no draft, no `reducing_gap`, no chaining)."""
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    image.load()
    outputs = 0
    for preset in presets:
        copy = image.copy()
        if preset.max_width is not None and preset.max_height is not None:
            box = (preset.max_width, preset.max_height)
            if preset.crop:
                copy = ImageOps.fit(copy, box, Image.Resampling.LANCZOS)
            else:
                scale = min(box[0] / copy.width, box[1] / copy.height, 1.0)
                size = (round(copy.width * scale), round(copy.height * scale))
                copy = copy.resize(size, Image.Resampling.LANCZOS)
        for fmt, options in (
            ("WEBP", {"quality": WEBP_Q, "method": WEBP_EFFORT}),
            ("JPEG", {"quality": JPEG_Q, "optimize": True, "progressive": True}),
        ):
            copy.save(io.BytesIO(), fmt, **options)
            outputs += 1
    return outputs


def vips(data: bytes, presets: tuple[Preset, ...]) -> int:
    outputs = 0
    for preset in presets:
        if preset.max_width is None or preset.max_height is None:
            image = pyvips.Image.new_from_buffer(data, "", access="sequential").autorot()
        else:
            image = pyvips.Image.thumbnail_buffer(
                data,
                preset.max_width,
                height=preset.max_height,
                size="down",
                crop="centre" if preset.crop else "none",
            )
        image = image.copy_memory()  # resize once, encode twice (as ours and naive do)
        image.webpsave_buffer(Q=WEBP_Q, effort=WEBP_EFFORT, strip=True)
        image.jpegsave_buffer(Q=JPEG_Q, optimize_coding=True, interlace=True, strip=True)
        outputs += 2
    return outputs


def _time(
    fn: Callable[[bytes, tuple[Preset, ...]], int], data: bytes, presets: tuple[Preset, ...]
) -> tuple[float, int]:
    fn(data, presets)  # warm-up
    runs = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        count = fn(data, presets)
        runs.append((time.perf_counter() - started) * 1000)
    return statistics.median(runs), count


@dataclass(frozen=True)
class PathRun:
    wall_ms: float  # per image at steady state
    processor_cpu_ms: float  # per image: the processor and its job processes
    aws_cpu_ms: float  # per image: the local S3/SQS server (production runs it elsewhere)


async def full_path(presets_spec: str) -> PathRun:
    """The real path on all cores: UPLOADS distinct 12 MP JPEGs wait on the queue, then the
    processor starts; the gap between the first and the last turning READY, divided by the
    uploads in between, is the time per image at steady state. CPU is counted per process
    from the processor's start to the end, so the local S3/SQS server's share (it runs on
    these two cores, as it would not in production) can be told apart."""
    workdir = Path(tempfile.mkdtemp(prefix="imagery-bench-"))
    bodies = distinct(photo_image(4000, 3000, 12), "JPEG", UPLOADS)
    async with infrastructure() as infra:
        pipeline = Pipeline(infra.dsn, infra.aws, workdir)
        ids = [await pipeline.submit(body, "image/jpeg") for body in bodies]
        cores = str(os.cpu_count() or 2)
        assert infra.aws_server.proc is not None
        aws_pid = infra.aws_server.proc.pid
        with pipeline.processor(
            PROCESSOR_JOB_SLOTS=cores,
            PROCESSOR_CONCURRENCY=str(2 * int(cores)),
            VARIANT_PRESETS=presets_spec,
        ) as processor:
            assert processor.proc is not None
            cpu = tree_cpu_seconds(processor.proc.pid), tree_cpu_seconds(aws_pid)
            records = await pipeline.wait_terminal(ids, within=600)
            processor_cpu = tree_cpu_seconds(processor.proc.pid) - cpu[0]
            aws_cpu = tree_cpu_seconds(aws_pid) - cpu[1]
    assert {r["status"] for r in records.values()} == {"ready"}, records
    done: list[float] = sorted(r["updated_at"].timestamp() for r in records.values())
    return PathRun(
        (done[-1] - done[0]) / (len(done) - 1) * 1000,
        processor_cpu / len(ids) * 1000,
        aws_cpu / len(ids) * 1000,
    )


def main() -> None:
    pyvips.cache_set_max(0)
    pyvips.concurrency_set(1)  # one core each, like one of our job processes
    data = photo(4000, 3000, "JPEG")
    rows, verdicts, path_rows = [], [], []
    for label, presets, spec in (
        ("3 sizes (issue)", THREE_SIZES, THREE_SIZES_SPEC),
        # all five at ingest, as in process (the default profile renders two of them lazily)
        ("5 presets (default)", DEFAULT_PRESETS, DEFAULT_PRESETS_SPEC.replace(":lazy", "")),
    ):
        measured = {
            name: _time(fn, data, presets)
            for name, fn in (("ours", ours), ("naive Pillow", naive), ("pyvips", vips))
        }
        for name, (ms, count) in measured.items():
            rows.append(
                [
                    label,
                    name,
                    count,
                    ms,
                    ms / measured["naive Pillow"][0],
                    ms / measured["pyvips"][0],
                ]
            )
        to_naive = measured["ours"][0] / measured["naive Pillow"][0]
        to_vips = measured["ours"][0] / measured["pyvips"][0]
        if presets is THREE_SIZES:  # the targets are set on its three sizes
            verdicts.append(
                f"{label}: ours / naive {to_naive:.2f} "
                f"({'meets' if to_naive <= 0.25 else 'MISSES'} the target of 0.25), "
                f"ours / pyvips {to_vips:.2f} ({'meets' if to_vips <= 0.9 else 'MISSES'} 0.9)"
            )
        else:  # encoding the 1600 px and full-size outputs dominates every pipeline here
            verdicts.append(
                f"{label}: ours / naive {to_naive:.2f}, ours / pyvips {to_vips:.2f} "
                "(for reference: the targets are set on the issue's 3 sizes)"
            )
        # Each full-path run is paired with an in-process measurement taken just before it:
        # this machine's speed drifts by more than the margin being measured.
        pairs = []
        for _ in range(PATH_RUNS):
            in_process = _time(ours, data, presets)[0]
            pairs.append((in_process, asyncio.run(full_path(spec))))
        ratio = statistics.median(run.wall_ms / base for base, run in pairs)
        own = statistics.median(
            run.processor_cpu_ms / (os.cpu_count() or 2) / base for base, run in pairs
        )
        path_rows.append(
            [
                label,
                statistics.median(base for base, _ in pairs),
                statistics.median(run.wall_ms for _, run in pairs),
                ratio,
                statistics.median(run.processor_cpu_ms for _, run in pairs),
                statistics.median(run.aws_cpu_ms for _, run in pairs),
            ]
        )
        verdicts.append(
            f"{label}: full path / in process {ratio:.2f} "
            f"({'meets' if ratio <= 1.25 else 'MISSES'} the target of 1.25); the processor's "
            f"own CPU spread over the cores: {own:.2f} x in process"
        )
    print(
        table(
            f"Variants of one 12 MP JPEG ({len(data) / 1e6:.1f} MB), median of {ROUNDS}, one core",
            ["outputs", "pipeline", "files", "ms per image", "vs naive", "vs pyvips"],
            rows,
        )
    )
    print(
        table(
            f"Full path (PUT -> event -> READY), {UPLOADS} distinct 12 MP JPEGs, "
            f"{os.cpu_count()} job slots, steady state; medians of {PATH_RUNS} runs, ratio "
            "per run against an in-process measurement just before it",
            [
                "outputs",
                "in process ms (1 core)",
                "full path ms per image",
                "ratio",
                "processor CPU ms/image",
                "local S3/SQS CPU ms/image",
            ],
            path_rows,
        )
    )
    print("\n".join(verdicts) + "\n", flush=True)


if __name__ == "__main__":
    main()
