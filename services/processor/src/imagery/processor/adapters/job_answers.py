"""What an isolated job answers, held to what a job can answer: a result, a verdict on the
file, or an error; and what a job process's exit says about why it died. Nothing here trusts
the answer: a job that answers something it cannot make was not itself any more."""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Any

from imagery.common.errors import FailureReason
from imagery.common.formats import FORMATS
from imagery.processor.imaging import Processed, Rejected, RenderSpec


@dataclass(frozen=True, slots=True)
class Finished:
    value: Any
    peak_rss_bytes: int | None  # the job process's peak resident memory, as it reported


class JobFailed(RuntimeError):
    """The job's function raised something that is not a verdict on the file."""


def verdict(response: Any) -> Finished:
    if not isinstance(response, dict):
        raise Rejected(FailureReason.PROCESSING_CRASHED, "an answer that is not an object")
    peak = response.get("peak_rss_bytes")
    peak_rss = peak if isinstance(peak, int) and peak >= 0 else None
    if "ok" in response:
        return Finished(response["ok"], peak_rss)
    rejected = response.get("rejected")
    if isinstance(rejected, list) and len(rejected) == 2:
        reason, detail = rejected
        if reason in FailureReason.__members__ and isinstance(detail, str):
            raise Rejected(FailureReason(reason), detail[:500], peak_rss_bytes=peak_rss)
    if isinstance(response.get("error"), str):
        raise JobFailed(response["error"][:500])
    raise Rejected(FailureReason.PROCESSING_CRASHED, "an answer of unknown shape")


def checked(value: Any, spec: RenderSpec) -> Processed:
    """What a job says it made, held to what a job can make: anything else means the job
    process was not itself any more."""
    try:
        if _plausible(value, {p.name for p in spec.presets}):
            return value  # type: ignore[no-any-return]
    except Exception:  # noqa: BLE001, S110 - any surprise in the answer is a bad answer
        pass
    raise Rejected(FailureReason.PROCESSING_CRASHED, "the job answered something it cannot make")


def _plausible(value: Any, presets: set[str]) -> bool:
    if not isinstance(value, Processed) or not isinstance(value.variants, tuple):
        return False
    verified = value.verified
    counts = (verified.width, verified.height, verified.frames, verified.size_bytes)
    if not (
        isinstance(verified.format, str)
        and verified.format in FORMATS
        and isinstance(verified.sha256, str)
        and len(verified.sha256) == 64
        and all(isinstance(n, int) and n > 0 for n in counts)
    ):
        return False
    return all(
        isinstance(v.body, bytes)
        and isinstance(v.name, str)
        and v.name in presets
        and isinstance(v.format, str)
        and v.format in FORMATS
        and FORMATS[v.format].variant
        and v.content_type == FORMATS[v.format].content_type
        and isinstance(v.width, int)
        and isinstance(v.height, int)
        and v.width > 0
        and v.height > 0
        for v in value.variants
    )


def death_reason(exitcode: int | None) -> FailureReason:
    if exitcode == -signal.SIGXCPU:
        return FailureReason.CPU_LIMIT
    if exitcode == -signal.SIGKILL:
        return FailureReason.MEMORY_LIMIT
    return FailureReason.PROCESSING_CRASHED
