"""Variant making for one 12 MP JPEG, three ways on the same file and the same outputs, one
core, in this process: ours (verification included), a naive Pillow pipeline (full decode,
a copy and LANCZOS from full size per output), and pyvips (libvips, shrink-on-load).
Two output sets: the issue's (3 sizes x JPEG + WebP) and our defaults (5 presets with a
full-size original). Targets (issue 5): ours <= 0.25x naive and <= 0.9x pyvips."""

from __future__ import annotations

import io
import os
import statistics
import time
from collections.abc import Callable

import pyvips
from PIL import Image, ImageOps

from bench.harness import table
from bench.processor import photo
from imagery.common.presets import DEFAULT_PRESETS, Preset
from imagery.processor.render import RenderSpec, verify_and_render
from imagery.processor.verify import Limits

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
THREE_SIZES = tuple(p for p in DEFAULT_PRESETS if p.name in ("small", "medium", "large"))
WEBP_Q, WEBP_EFFORT, JPEG_Q = 80, 4, 85


def ours(data: bytes, presets: tuple[Preset, ...]) -> int:
    processed = verify_and_render(data, "image/jpeg", Limits(), RenderSpec(presets=presets))
    return len(processed.variants)


def naive(data: bytes, presets: tuple[Preset, ...]) -> int:
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    image.load()
    outputs = 0
    for preset in presets:
        copy = image.copy()
        if preset.max_width is not None and preset.max_height is not None:
            if preset.crop:
                copy = ImageOps.fit(
                    copy, (preset.max_width, preset.max_height), Image.Resampling.LANCZOS
                )
            else:
                copy.thumbnail((preset.max_width, preset.max_height), Image.Resampling.LANCZOS)
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


def main() -> None:
    pyvips.cache_set_max(0)
    pyvips.concurrency_set(1)  # one core each, like one of our job processes
    data = photo(4000, 3000, "JPEG")
    rows, verdicts = [], []
    for label, presets in (
        ("3 sizes (issue)", THREE_SIZES),
        ("5 presets (default)", DEFAULT_PRESETS),
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
        verdicts.append(
            f"{label}: ours / naive {to_naive:.2f} (target <= 0.25), "
            f"ours / pyvips {to_vips:.2f} (target <= 0.9)"
        )
    print(
        table(
            f"Variants of one 12 MP JPEG ({len(data) / 1e6:.1f} MB), median of {ROUNDS}, one core",
            ["outputs", "pipeline", "files", "ms per image", "vs naive", "vs pyvips"],
            rows,
        )
    )
    print("\n".join(verdicts) + "\n", flush=True)


if __name__ == "__main__":
    main()
