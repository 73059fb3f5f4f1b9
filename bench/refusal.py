"""What refusing an over-budget animation costs, next to accepting a small one: the job's
own work (verify and render, in process, one core), so a flood of hostile animations costs
no more than the same number of honest uploads."""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Callable

from PIL import Image

from bench.harness import table
from imagery.processor.adapters.render import verify_and_render
from imagery.processor.imaging import Limits, Rejected, RenderSpec
from tests import images

ROUNDS = 15


def small_animation(frames: int = 42, side: int = 245) -> bytes:
    shots = [Image.new("RGB", (side, side), (i * 6 % 256, 80, 160)) for i in range(frames)]
    buffer = io.BytesIO()
    shots[0].save(buffer, "GIF", save_all=True, append_images=shots[1:], duration=40, loop=0)
    return buffer.getvalue()


def _median_ms(job: Callable[[], object]) -> float:
    job()  # warm-up
    runs = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        job()
        runs.append((time.perf_counter() - started) * 1000)
    return statistics.median(runs)


def _refuse(data: bytes) -> str:
    try:
        verify_and_render(data, "image/gif", Limits(), RenderSpec())
    except Rejected as rejected:
        return rejected.reason
    return "accepted"


def main() -> None:
    hostile, honest = images.sparse_gif(), small_animation()
    outcome = _refuse(hostile)
    refuse_ms = _median_ms(lambda: _refuse(hostile))
    accept_ms = _median_ms(lambda: verify_and_render(honest, "image/gif", Limits(), RenderSpec()))
    rows = [
        ["26 frames at 4000x4000 (1x1 dots)", f"{len(hostile) / 1e3:.1f} KB", outcome, refuse_ms],
        ["42 frames at 245x245", f"{len(honest) / 1e3:.1f} KB", "accepted", accept_ms],
    ]
    print(
        table(
            f"Refusing an over-budget animation vs accepting a small one, median of {ROUNDS}",
            ["file", "size", "outcome", "job ms"],
            rows,
        )
    )
    verdict = "meets" if refuse_ms <= accept_ms else "MISSES"
    print(
        f"refuse / accept {refuse_ms / accept_ms:.3f} ({verdict} the target: refusing is no "
        "slower than accepting)\n",
        flush=True,
    )


if __name__ == "__main__":
    main()
