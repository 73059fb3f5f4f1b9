"""What an image job takes and gives back. No Pillow here: the job itself runs in the
adapters (`adapters/verify.py`, `adapters/render.py`), in an isolated process."""

from __future__ import annotations

from dataclasses import dataclass

from imagery.common.errors import FailureReason
from imagery.common.presets import DEFAULT_PRESETS, Preset


@dataclass(frozen=True, slots=True)
class Limits:
    max_side: int = 10_000
    max_pixels: int = 40_000_000
    max_frames: int = 100
    max_total_pixels: int = 400_000_000  # width x height x frames
    max_scans: int = 100  # of a JPEG: encoders write about ten for a progressive file


@dataclass(frozen=True, slots=True)
class RenderSpec:
    presets: tuple[Preset, ...] = DEFAULT_PRESETS
    avif: bool = False
    webp_quality: int = 80
    webp_method: int = 4
    jpeg_quality: int = 85
    avif_speed: int = 8  # Pillow's default speed is several times slower


@dataclass(frozen=True, slots=True)
class Verified:
    format: str  # jpeg | png | webp | avif | gif
    width: int  # as displayed, after EXIF orientation
    height: int
    frames: int
    size_bytes: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Rendered:
    name: str
    format: str  # webp | jpeg | png | avif
    content_type: str
    width: int
    height: int
    body: bytes


@dataclass(frozen=True, slots=True)
class Processed:
    verified: Verified
    variants: tuple[Rendered, ...]


class Rejected(Exception):
    """The file failed its job: the bytes are not an acceptable image, or decoding them hit a
    limit (memory, CPU, time) or crashed the job process. `reason` becomes the record's
    failure_reason; `peak_rss_bytes` is the job process's, when it reported one. `by_the_kernel`
    marks a job killed from outside (the pod's memory limit, not its own): it is retried once
    before it counts against the file."""

    def __init__(
        self,
        reason: FailureReason,
        detail: str,
        *,
        peak_rss_bytes: int | None = None,
        by_the_kernel: bool = False,
    ) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.peak_rss_bytes = peak_rss_bytes
        self.by_the_kernel = by_the_kernel

    def __reduce__(self) -> tuple[type[Rejected], tuple[str, str]]:  # crosses the process pipe
        return (Rejected, (self.reason, self.detail))
