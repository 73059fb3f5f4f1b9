"""What the placeholders, colours and perceptual hash (ThumbHash, BlurHash, average and
dominant colours, pHash) add to an ingest job, next to the job itself: the job function run in
process on one core with the default profile's at-ingest presets, and the time spent inside
its insights step measured in the same calls (the step is wrapped with a timer), so the two
figures come from the very same runs. Target: at most 3% of the job."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

from PIL import Image

from bench.harness import table
from imagery.common.presets import DEFAULT_PRESETS
from imagery.common.profiles import default_profile
from imagery.processor.adapters import render
from imagery.processor.imaging import Insights, Limits, RenderSpec

ROUNDS = 7
TARGET = 0.03


def _one_job(data: bytes, content_type: str, spec: RenderSpec) -> tuple[float, float]:
    """(job ms, insights ms) of one run of the job function."""
    spent: list[float] = []
    real = render.insights  # type: ignore[attr-defined]  # the name render.py calls

    def timed(image: Image.Image, components: tuple[int, int]) -> Insights:
        started = time.perf_counter()
        try:
            return real(image, components)
        finally:
            spent.append(time.perf_counter() - started)

    render.insights = timed  # type: ignore[attr-defined]
    try:
        started = time.perf_counter()
        render.verify_and_render(data, content_type, Limits(), spec)
        job = time.perf_counter() - started
    finally:
        render.insights = real  # type: ignore[attr-defined]
    return job * 1000, sum(spent) * 1000


def cost_table(files: Sequence[tuple[str, bytes, str]]) -> str:
    """`files`: (name, bytes, content type)."""
    spec = RenderSpec(presets=default_profile(DEFAULT_PRESETS).at_ingest)
    rows: list[list[object]] = []
    shares = []
    for name, data, content_type in files:
        _one_job(data, content_type, spec)  # warm-up
        runs = [_one_job(data, content_type, spec) for _ in range(ROUNDS)]
        job = statistics.median(r[0] for r in runs)
        added = statistics.median(r[1] for r in runs)
        shares.append(added / job)
        rows.append([name, job, added, f"{added / job:.2%}"])
    worst = max(shares)
    verdict = "met" if worst <= TARGET else "NOT met"
    return "\n".join(
        [
            table(
                f"Placeholder + colours + pHash per ingest job (in process, median of {ROUNDS})",
                ["file", "job ms", "placeholder+colour+phash ms", "share of job"],
                rows,
            ),
            f"added cost, worst file: {worst:.2%} of the job (target <= {TARGET:.0%}): {verdict}",
        ]
    )
