"""Real verification of uploaded bytes. Runs inside an isolated job process (see
`isolation.py`): a pure function of the bytes, no I/O.

Order matters: magic bytes first (cheap, and they decide which decoder may even look at the
file), then the header's dimensions and frame count against the limits *before* any pixel is
decoded, then a full decode of every frame (a JPEG cut in half passes `Image.verify()`, which
reads only headers; the full decode is the real check).
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Callable
from typing import TypeVar

import pillow_heif
from PIL import Image, ImageFile, ImageSequence, UnidentifiedImageError

from imagery.common.errors import FailureReason
from imagery.common.formats import FORMATS, declares
from imagery.processor.adapters.containers import ContainerError, animation_budget
from imagery.processor.imaging import Limits, Rejected, Verified

T = TypeVar("T")
# HEIC/HEIF through libheif (Pillow format "HEIF"): the picture itself only, never an
# embedded thumbnail (Pillow's draft would pick one), depth map or auxiliary image; tiles are
# decoded one at a time, so a job's CPU and memory stay as bounded as for other formats.
pillow_heif.register_heif_opener(
    thumbnails=False, depth_images=False, aux_images=False, decode_threads=1
)
_ORIENTATION_TAG = 0x0112
_SWAPPING_ORIENTATIONS = {5, 6, 7, 8}  # rotated 90/270: displayed width is stored height
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_HEIC_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"})
_HEIF_BRANDS = frozenset({b"mif1", b"msf1"})
# Formats whose container must be well formed: libheif decodes what it can of a broken one.
_STRICT_CONTAINERS = frozenset({"heic", "heif"})


def sniff(data: bytes) -> str | None:
    """The allowlisted format named by the magic bytes, or None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[4:8] == b"ftyp":
        return _iso_bmff_format(data)
    return None


def _iso_bmff_format(data: bytes) -> str | None:
    """By the ftyp box's major and compatible brands (not its minor version): an AVIF brand
    wins (an AVIF also lists mif1), then an HEVC one (heic), then the bare HEIF structure
    brands (heif: whatever codec its items use)."""
    box_size = int.from_bytes(data[:4], "big")
    brands = data[8:12] + data[16 : max(16, min(box_size, 64))]
    named = {brands[i : i + 4] for i in range(0, len(brands) - 3, 4)}
    if named & _AVIF_BRANDS:
        return "avif"
    if named & _HEIC_BRANDS:
        return "heic"
    if named & _HEIF_BRANDS:
        return "heif"
    return None


def verify(data: bytes, declared_content_type: str, limits: Limits) -> Verified:
    """Verify only (no variants)."""
    return verify_then(data, declared_content_type, limits, None)[0]


def verify_then(
    data: bytes,
    declared_content_type: str,
    limits: Limits,
    then: Callable[[Image.Image, Verified], T] | None,
    needed: Callable[[tuple[int, int]], tuple[int, int] | None] | None = None,
) -> tuple[Verified, T | None]:
    """Verify, then hand the already decoded image (first frame) to `then`, so variants are
    made without decoding or copying the picture again. `needed(stored size)` may name the
    smallest size the outputs need: a JPEG is then decoded with DCT scaling (`draft`) at
    the largest scale still >= that size — every byte is still decoded, so truncation is
    still caught, at a fraction of the cost."""
    if not data:
        raise Rejected(FailureReason.EMPTY, "the upload has no bytes")
    detected = sniff(data)
    if detected is None:
        raise Rejected(
            FailureReason.UNSUPPORTED_FORMAT,
            "the bytes are not JPEG, PNG, WebP, AVIF, GIF, HEIC or HEIF",
        )
    if not declares(declared_content_type, detected):
        raise Rejected(
            FailureReason.CONTENT_TYPE_MISMATCH,
            f"declared {declared_content_type}, the bytes are {detected}",
        )
    _check_container(data, detected, limits)
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    Image.MAX_IMAGE_PIXELS = limits.max_pixels
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=[FORMATS[detected].pillow]) as image:
                frames = _check_header(image, limits)
                target = needed(image.size) if needed is not None else None
                if target is not None and detected == "jpeg":
                    image.draft(image.mode, target)
                _decode_fully(image, frames)
                width, height = _displayed_size(image)
                verified = Verified(
                    detected, width, height, frames, len(data), hashlib.sha256(data).hexdigest()
                )
                return verified, (then(image, verified) if then is not None else None)
        except Rejected:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise Rejected(FailureReason.DIMENSIONS_EXCEEDED, str(exc)) from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
            raise Rejected(FailureReason.CORRUPT, f"{type(exc).__name__}: {exc}") from None


def _check_container(data: bytes, fmt: str, limits: Limits) -> None:
    """The frame budget from the container structure alone, before Pillow decodes a frame
    (an animation's frames would otherwise be decoded just to be counted). When the structure
    gives no answer, Pillow's header checks decide. A JPEG's scans are its cost the way frames
    are an animation's: each progressive scan refines the whole picture again, so thousands
    of them in a small file cost minutes of CPU. Entropy-coded data never holds FF DA (a data
    FF byte is always followed by 00), so every FF DA starts a scan."""
    if fmt == "jpeg" and data.count(b"\xff\xda") > limits.max_scans:
        raise Rejected(
            FailureReason.DIMENSIONS_EXCEEDED, f"more than {limits.max_scans} JPEG scans"
        )
    try:
        budget = animation_budget(data, fmt, max_frames=limits.max_frames)
    except ContainerError as exc:
        if fmt in _STRICT_CONTAINERS:
            raise Rejected(FailureReason.CORRUPT, str(exc)) from None
        return
    if budget is not None:
        frames, width, height = budget
        _check_size(width, height, limits)
        _check_frames(width, height, frames, limits)


def _check_header(image: Image.Image, limits: Limits) -> int:
    width, height = image.size
    _check_size(width, height, limits)
    frames, (width, height) = _count_frames(image, limits)
    _check_frames(width, height, frames, limits)
    return frames


def _check_size(width: int, height: int, limits: Limits) -> None:
    if width <= 0 or height <= 0:
        raise Rejected(FailureReason.CORRUPT, f"{width}x{height} is not a picture")
    if max(width, height) > limits.max_side:
        raise Rejected(
            FailureReason.DIMENSIONS_EXCEEDED,
            f"{width}x{height} exceeds {limits.max_side} px a side",
        )
    if width * height > limits.max_pixels:
        raise Rejected(
            FailureReason.DIMENSIONS_EXCEEDED,
            f"{width}x{height} exceeds {limits.max_pixels} pixels",
        )


def _check_frames(width: int, height: int, frames: int, limits: Limits) -> None:
    if frames > limits.max_frames:
        raise Rejected(FailureReason.DIMENSIONS_EXCEEDED, f"more than {limits.max_frames} frames")
    if width * height * frames > limits.max_total_pixels:
        raise Rejected(
            FailureReason.DIMENSIONS_EXCEEDED,
            f"{frames} frames of {width}x{height} is too many pixels",
        )


def _count_frames(image: Image.Image, limits: Limits) -> tuple[int, tuple[int, int]]:
    """Frames, counted from headers and stopping past the limit (never n_frames on a file
    that claims millions), and the largest frame's size: each is checked, since the frames
    of some formats (HEIF's top-level images) need not share the first one's size."""
    largest = image.size
    if not getattr(image, "is_animated", False):
        return 1, largest
    count = 0
    for frame in ImageSequence.Iterator(image):
        count += 1
        if count > limits.max_frames:
            break
        _check_size(*frame.size, limits)
        largest = max(largest, frame.size, key=lambda size: size[0] * size[1])
    image.seek(0)
    return count, largest


def _decode_fully(image: Image.Image, frames: int) -> None:
    for index in range(frames):
        image.seek(index)
        image.load()
    image.seek(0)


def _displayed_size(image: Image.Image) -> tuple[int, int]:
    width, height = image.size
    try:
        orientation = image.getexif().get(_ORIENTATION_TAG)
    except (OSError, ValueError, SyntaxError):
        orientation = None
    return (height, width) if orientation in _SWAPPING_ORIENTATIONS else (width, height)
