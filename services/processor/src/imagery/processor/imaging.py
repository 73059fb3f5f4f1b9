"""What an image job takes and gives back. No Pillow here: the job itself runs in the
adapters (`adapters/verify.py`, `adapters/render.py`), in an isolated process."""

from __future__ import annotations

from dataclasses import dataclass

from imagery.common.errors import FailureReason
from imagery.common.presets import DEFAULT_PRESETS, Preset

# The lowest quality setting per encoder whose output still reaches the quality floor (the
# SSIMULACRA2 score of the seed's JPEG quality 85), per default preset's box: calibrated
# offline by `python -m bench calibrate`, copied from bench/calibration.json ("jpegli +
# mozjpeg", the JPEG encoder in use, and "WebP m4", RenderSpec's WebP method). A JPEG with no
# quality of its own is encoded at its floor. AVIF is not calibrated: its floor is the quality
# it is encoded at.
QUALITY_FLOORS: dict[str, dict[str, int]] = {
    "jpeg": {"thumbnail": 70, "small": 88, "medium": 88, "large": 88, "original": 89},
    "webp": {"thumbnail": 73, "small": 90, "medium": 90, "large": 91, "original": 94},
}
# The longer side of each default box the floors were calibrated at; None: full size.
_FLOOR_BOXES: dict[str, int | None] = {
    "thumbnail": 150,
    "small": 400,
    "medium": 800,
    "large": 1600,
    "original": None,
}


def floor_box(preset: Preset) -> str:
    """The default box whose floors a preset takes: the one nearest to its longer side (a
    tie goes to the larger box, whose floor is the safer one); a full-size preset's is
    "original"."""
    if preset.max_width is None or preset.max_height is None:
        return "original"
    side = max(preset.max_width, preset.max_height)
    sized = [(name, box) for name, box in _FLOOR_BOXES.items() if box is not None]
    return min(sized, key=lambda item: (abs(item[1] - side), -item[1]))[0]


def quality_floor(encoder: str, preset: Preset) -> int | None:
    """The calibrated floor of `encoder` ("jpeg", "webp") for `preset`; None when that
    encoder has none."""
    floors = QUALITY_FLOORS.get(encoder)
    return None if floors is None else floors[floor_box(preset)]


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
    jpeg_quality: int | None = None  # None: each preset's calibrated floor (QUALITY_FLOORS)
    avif_speed: int = 8  # Pillow's default speed is several times slower
    blurhash_components: tuple[int, int] = (4, 3)  # across, down: the profile's setting


@dataclass(frozen=True, slots=True)
class Verified:
    format: str  # jpeg | png | webp | avif | gif | heic | heif
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
    over_budget: bool = False  # larger than the preset's max_bytes even at the quality floor
    max_bytes: int | None = None  # the preset's byte budget, if it has one


@dataclass(frozen=True, slots=True)
class Insights:
    """Placeholders, colours and a perceptual hash of the content (`adapters/insights.py`)."""

    thumbhash: bytes
    blurhash: str
    average_color: str  # "#rrggbb"; "" when no pixel is visible
    dominant_colors: tuple[tuple[str, float], ...]  # ("#rrggbb", share), largest first
    phash: int  # 64-bit DCT perceptual hash, signed (a Postgres bigint)


@dataclass(frozen=True, slots=True)
class Processed:
    verified: Verified
    variants: tuple[Rendered, ...]
    insights: Insights | None = None  # None: not computed (a job that renders no content)


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
