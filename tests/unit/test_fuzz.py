"""Fuzzing the job, in-process: whatever malformed file an upload holds, `verify_and_render`
ends it as an accepted image (`Processed`, within the limits) or as `Rejected` with a listed
failure reason: never another exception, never a hang.

The cases come from `tests/fuzz.py` (seeded, so the same every run). A failure names each bad
case with its seed and index and the one line that reproduces it. Another seed or count:
IMAGERY_FUZZ_SEED=... IMAGERY_FUZZ_COUNT=... pytest tests/unit/test_fuzz.py
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from types import FrameType

from PIL import Image, ImageFile

from imagery.common.formats import ALLOWED_CONTENT_TYPES
from imagery.processor.adapters.render import verify_and_render
from imagery.processor.imaging import Limits, Processed, Rejected, RenderSpec
from tests import fuzz

SEED = int(os.environ.get("IMAGERY_FUZZ_SEED", "20250601"))
COUNT = int(os.environ.get("IMAGERY_FUZZ_COUNT", "3000"))
CASE_BUDGET_SECONDS = 5.0  # a case takes milliseconds; a case past this is hanging

Job = Callable[[bytes, str, Limits, RenderSpec], Processed]

LISTED = fuzz.listed_reasons()


class CaseOverran(BaseException):
    """Raised by SIGALRM inside a case past its budget. A BaseException, so the job's own
    `except Exception` cannot turn a hang into a Rejected."""


def _overran(signum: int, frame: FrameType | None) -> None:
    raise CaseOverran


@contextlib.contextmanager
def _alarm_raises() -> Iterator[None]:
    """While inside, SIGALRM raises CaseOverran. pytest-timeout's own alarm, if it set one, is
    put back afterwards with the time it had left. Global Pillow settings the job sets are
    put back too."""
    previous_handler = signal.signal(signal.SIGALRM, _overran)
    delay, interval = signal.getitimer(signal.ITIMER_REAL)
    pillow = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    started = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler)
        if delay > 0:
            left = max(delay - (time.monotonic() - started), 0.001)
            signal.setitimer(signal.ITIMER_REAL, left, interval)
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = pillow


def _outcome(
    index: int,
    data: bytes,
    content_type: str,
    *,
    job: Job = verify_and_render,
    budget: float = CASE_BUDGET_SECONDS,
) -> tuple[str, str | None]:
    """(what the case ended as, what is wrong with that or None). Call inside _alarm_raises."""
    signal.setitimer(signal.ITIMER_REAL, budget)
    try:
        with warnings.catch_warnings():
            # As in production, where a decoder's warning is not an error (pytest makes it one);
            # verify still turns DecompressionBombWarning into an error itself.
            warnings.simplefilter("ignore")
            processed = job(data, content_type, fuzz.LIMITS, fuzz.spec_for(index))
    except CaseOverran:
        return "HANG", f"still running after {budget:g} s (the budget of a case)"
    except Rejected as rejected:
        if rejected.reason in LISTED:
            return str(rejected.reason), None
        return "UNLISTED", f"Rejected with unlisted reason {rejected.reason!r}: {rejected.detail}"
    except Exception as exc:  # noqa: BLE001 - an escape is what this test looks for
        return "ESCAPE", f"raised {type(exc).__module__}.{type(exc).__qualname__}: {exc}"[:400]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    if not isinstance(processed, Processed):
        return "ESCAPE", f"returned {type(processed).__name__}, not Processed"
    verified, limits = processed.verified, fuzz.LIMITS
    if (
        max(verified.width, verified.height) > limits.max_side
        or verified.width * verified.height > limits.max_pixels
        or verified.frames > limits.max_frames
        or min(verified.width, verified.height, verified.frames) < 1
    ):
        return "ESCAPE", f"accepted {verified}, outside {limits}"
    if not processed.variants:
        return "ESCAPE", "accepted with no variants"
    return "Processed", None


def test_every_malformed_file_ends_as_an_image_or_a_listed_rejection() -> None:
    outcomes: Counter[str] = Counter()
    failures: list[str] = []
    with _alarm_raises():
        for index, (name, data, content_type) in enumerate(fuzz.cases(SEED, COUNT)):
            outcome, problem = _outcome(index, data, content_type)
            outcomes[outcome] += 1
            if problem is not None:
                failures.append(f"{name}\n    {problem}\n    reproduce: {fuzz.repro(SEED, index)}")
    assert not failures, (
        f"{len(failures)} of {COUNT} fuzz cases (seed {SEED}) broke the contract "
        f"(outcomes {dict(outcomes)}):\n" + "\n".join(failures[:40])
    )
    assert outcomes["Processed"] > COUNT // 20, f"too few cases survive to render: {outcomes}"
    assert outcomes["CORRUPT"] > COUNT // 10, f"too few cases are damaged: {outcomes}"


def test_the_cases_start_from_an_accepted_image_of_every_type() -> None:
    assert {base.kind for base in fuzz.bases()} == set(ALLOWED_CONTENT_TYPES.values())
    for base in fuzz.bases():
        processed = verify_and_render(
            base.data, fuzz.CONTENT_TYPES[base.kind], fuzz.LIMITS, fuzz.SPEC
        )
        assert processed.verified.format == base.kind, base.name
        assert max(processed.verified.width, processed.verified.height) <= 64, base.name


def test_a_case_is_the_same_every_time_and_made_alone() -> None:
    made = list(fuzz.cases(SEED, 40))
    assert made == list(fuzz.cases(SEED, 40))
    assert fuzz.make_case(SEED, 37) == made[37]
    assert len({data for _, data, _ in made}) == len(made), "every case is a different file"
    assert made != list(fuzz.cases(SEED + 1, 40))


def test_a_hanging_case_is_stopped_and_named() -> None:
    def hangs(data: bytes, content_type: str, limits: Limits, spec: RenderSpec) -> Processed:
        try:
            while True:
                time.sleep(0.01)
        except Exception as exc:
            raise ValueError("the alarm was caught as an Exception") from exc

    with _alarm_raises():
        outcome, problem = _outcome(0, b"", "image/png", job=hangs, budget=0.2)
    assert outcome == "HANG"
    assert problem is not None and "0.2 s" in problem
    assert signal.getsignal(signal.SIGALRM) is not _overran, "the handler is put back"
