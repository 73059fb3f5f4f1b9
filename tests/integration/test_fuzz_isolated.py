"""Fuzz cases through the real isolated runner, with the production limits: the worst files
`tests/fuzz.py` makes (pixel, frame and scan floods, metadata bombs, headers claiming
billions) and a spread of seeded malformed ones. Each ends as an accepted image or as
`Rejected` with a listed reason; a job the runner kills for its memory, CPU or time, or that
crashes, surfaces as Rejected with MEMORY_LIMIT, CPU_LIMIT, PROCESSING_TIMEOUT or
PROCESSING_CRASHED."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from imagery.processor.adapters.isolation import IsolatedRunner, JobLimits
from imagery.processor.imaging import Limits, Processed, Rejected, RenderSpec
from tests import fuzz

pytestmark = pytest.mark.integration

SEED = 20250601
SAMPLE_SIZE = 40  # every worst case, the first case of every base image, then floods
LIMITS = Limits()  # production's
SPEC = RenderSpec()
KILLED = frozenset({"MEMORY_LIMIT", "CPU_LIMIT", "PROCESSING_TIMEOUT", "PROCESSING_CRASHED"})


@pytest.fixture(scope="module")
def runner() -> Iterator[IsolatedRunner]:
    runner = IsolatedRunner(
        2, JobLimits(memory_bytes=512 * 1024**2, cpu_seconds=2, wall_seconds=15)
    )
    runner.warm_up()
    yield runner
    runner.close()


def _sample() -> list[tuple[str, bytes, str]]:
    """The worst cases; then the first seeded case of each base image; then cases with
    headers at extremes or floods of chunks / frames, until SAMPLE_SIZE."""
    picked = list(fuzz.worst_cases())
    bases: set[str] = set()
    rest: list[tuple[str, bytes, str]] = []
    for case in fuzz.cases(SEED, 400):
        base = case[0].split("-")[2]
        if base not in bases:
            bases.add(base)
            picked.append(case)
        elif any(word in case[0] for word in ("dims", "flood", "bomb", "count")):
            rest.append(case)
    return (picked + rest)[:SAMPLE_SIZE]


def test_the_reasons_a_killed_job_ends_with_are_listed() -> None:
    assert fuzz.listed_reasons() >= KILLED


def test_malformed_and_hostile_files_end_as_images_or_listed_rejections(
    runner: IsolatedRunner,
) -> None:
    # A plain test on a loop of its own, never made the current loop (asyncio.run would unset
    # the one the looptime plugin leaves current, and the unclosed orphan fails the session).
    sample = _sample()
    listed = fuzz.listed_reasons()

    async def outcome(data: bytes, content_type: str) -> tuple[str, str | None, float]:
        started = time.monotonic()
        try:
            result = await runner.verify_and_render(data, content_type, LIMITS, SPEC)
        except Rejected as rejected:
            reason = str(rejected.reason)
            problem = None if reason in listed else f"unlisted reason {reason}: {rejected.detail}"
            return reason, problem, time.monotonic() - started
        except Exception as exc:  # noqa: BLE001 - an escape is what this test looks for
            escaped = f"raised {type(exc).__module__}.{type(exc).__qualname__}: {exc}"[:400]
            return "ESCAPE", escaped, time.monotonic() - started
        elapsed = time.monotonic() - started
        verified = result.processed.verified
        if not isinstance(result.processed, Processed) or not result.processed.variants:
            return "ESCAPE", f"returned {result!r:.200}", elapsed
        if (
            max(verified.width, verified.height) > LIMITS.max_side
            or verified.width * verified.height > LIMITS.max_pixels
            or verified.frames > LIMITS.max_frames
        ):
            return "ESCAPE", f"accepted {verified}, outside {LIMITS}", elapsed
        return "Processed", None, elapsed

    async def all_outcomes() -> list[tuple[str, str | None, float]]:
        return await asyncio.gather(*(outcome(data, kind) for _, data, kind in sample))

    loop = asyncio.new_event_loop()
    try:
        results = loop.run_until_complete(all_outcomes())
    finally:
        loop.close()
    report = [
        f"{name}: {ended} in {elapsed:.1f} s" + (f"\n    {problem}" if problem else "")
        for (name, _, _), (ended, problem, elapsed) in zip(sample, results, strict=True)
    ]
    failures = [line for line, (_, problem, _) in zip(report, results, strict=True) if problem]
    assert len(sample) == SAMPLE_SIZE
    assert not failures, "\n".join(failures) + "\n\nall outcomes:\n" + "\n".join(report)
    assert {ended for ended, _, _ in results} & KILLED, (
        "no job was killed, so the killed path went untested (the limits no longer bite on "
        "the worst cases?):\n" + "\n".join(report)
    )
