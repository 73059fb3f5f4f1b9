"""Variants: metadata-free, sRGB, re-encoded renditions of a verified image. Runs in the
isolated job process, on the image `verify_then` already decoded.

For speed, each size is resized from the previous, larger one with `reducing_gap` (one
expensive full-size pass, then cheap ones), never with `Image.copy()` (a full-size copy costs
time and memory). JPEG draft (DCT-scaled) decoding helps only when no full-size output is
wanted; verification decodes every byte anyway.

A preset with a byte budget (`max_bytes`) has each lossy output's quality searched by size
alone, never below the encoder's calibrated floor for that preset (`imaging.QUALITY_FLOORS`):
scoring quality at ingest would cost more than the encoding.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import mozjpeg_lossless_optimization as mozjpeg  # type: ignore[import-untyped]
import pyjpegli  # type: ignore[import-not-found]
from PIL import Image, ImageCms, ImageOps

from imagery.common.errors import FailureReason
from imagery.common.formats import content_type_of
from imagery.common.presets import Preset
from imagery.processor.adapters.insights import PHASH_SOURCE_SIDE, insights
from imagery.processor.adapters.verify import verify_then
from imagery.processor.imaging import (
    QUALITY_FLOORS,
    Insights,
    Limits,
    Processed,
    Rejected,
    Rendered,
    RenderSpec,
    quality_floor,
)

_SRGB = ImageCms.createProfile("sRGB")
_AVIF_QUALITY = 60
MAX_BUDGET_ENCODES = 6  # per output with a byte budget: the start, the floor, four bisections


def verify_and_render(
    data: bytes, content_type: str, limits: Limits, spec: RenderSpec
) -> Processed:
    """The whole job. Anything the bytes make a decoder or encoder raise is the file's fault:
    it ends as `Rejected`, never as an error that would be retried."""
    try:
        verified, rendered = verify_then(
            data,
            content_type,
            limits,
            lambda image, _: render_with_insights(image, spec),
            lambda size: _draft_size(size, spec),
        )
    except (Rejected, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - decoders raise whatever the bytes lead them to
        raise Rejected(FailureReason.UNPROCESSABLE, f"{type(exc).__name__}: {exc}"[:200]) from None
    outputs, found = rendered or ((), None)
    return Processed(verified, tuple(outputs), found)


def _draft_size(stored: tuple[int, int], spec: RenderSpec) -> tuple[int, int] | None:
    """Per axis, the largest size any preset needs, in the file's stored orientation (EXIF
    orientation is applied after decoding, so a rotated file needs the axes swapped); None
    when a full-size output is wanted. Never a square box: a 4000x3000 photo for a 1600x1600
    box needs 1600x1200, which a 1/2-scale decode (2000x1500) covers; 1600x1600 would not."""
    width, height = stored
    if not spec.presets:  # nothing rendered at ingest: verification decodes every byte anyway
        return None
    need_w = need_h = 0
    for preset in spec.presets:
        if preset.max_width is None or preset.max_height is None:
            return None
        upright = _needed_size(width, height, preset)
        rotated = _needed_size(height, width, preset)[::-1]
        need_w = max(need_w, upright[0], rotated[0])
        need_h = max(need_h, upright[1], rotated[1])
    return (need_w, need_h) if need_w < width or need_h < height else None


def render(image: Image.Image, spec: RenderSpec) -> list[Rendered]:
    return render_with_insights(image, spec)[0]


def render_with_insights(image: Image.Image, spec: RenderSpec) -> tuple[list[Rendered], Insights]:
    """The variants, and the insights computed from the smallest uncropped reduction made on
    the way that still covers the pHash's 64 px source (the normalised image if none does)."""
    base = _normalise(image)
    alpha = base.mode == "RGBA"
    outputs: list[Rendered] = []
    made = [base]  # largest first; each preset starts from the smallest that still covers it
    whole = base  # the smallest reduction of the whole picture that covers PHASH_SOURCE_SIDE
    for preset in sorted(spec.presets, key=_area, reverse=True):
        need_w, need_h = _needed(base, preset)
        source = min((m for m in made if m.width >= need_w and m.height >= need_h), key=_pixels)
        current = _resize(source, preset)
        made.append(current)
        if not preset.crop and max(current.size) >= PHASH_SOURCE_SIDE:
            whole = min(whole, current, key=_pixels)
        outputs.extend(_output(current, fmt, spec, preset) for fmt in _formats(preset, alpha, spec))
    return outputs, insights(whole, spec.blurhash_components)


def _output(image: Image.Image, fmt: str, spec: RenderSpec, preset: Preset) -> Rendered:
    if preset.max_bytes is None:
        body, over = _encode(image, fmt, spec, _quality(fmt, spec, preset)), False
    elif fmt == "png":  # lossless: no quality to trade for bytes
        body = _encode(image, fmt, spec, None)
        over = len(body) > preset.max_bytes
    else:
        start = _quality(fmt, spec, preset) or _AVIF_QUALITY
        fitted = fit_budget(
            lambda q: _encode(image, fmt, spec, q),
            start=start,
            floor=quality_floor(fmt, preset),
            budget=preset.max_bytes,
        )
        body, over = fitted.body, fitted.over_budget
    return Rendered(
        preset.name,
        fmt,
        content_type_of(fmt),
        image.width,
        image.height,
        body,
        over_budget=over,
        max_bytes=preset.max_bytes,
    )


@dataclass(frozen=True, slots=True)
class Fitted:
    body: bytes
    quality: int
    over_budget: bool


def fit_budget(
    encode: Callable[[int], bytes],
    *,
    start: int,
    floor: int | None,
    budget: int,
    max_encodes: int = MAX_BUDGET_ENCODES,
) -> Fitted:
    """The highest quality from `floor` to `start` whose output fits in `budget` bytes, found
    from sizes alone: `start` if it fits, else `floor`, else bisected between them while
    encodes are left. Never below the floor (a floor above `start` raises the start to it;
    None: no floor, the start is it). At the floor and still over: the floor's output,
    marked over budget. Only sizes that were measured are trusted: the size is not strictly
    monotonic in the quality."""
    low = start if floor is None else floor
    high = max(start, low)
    body = encode(high)
    if len(body) <= budget:
        return Fitted(body, high, over_budget=False)
    if low == high:
        return Fitted(body, high, over_budget=True)
    best = encode(low)
    if len(best) > budget:
        return Fitted(best, low, over_budget=True)
    encodes = 2  # low fits, high does not
    while high - low > 1 and encodes < max_encodes:
        middle = (low + high) // 2
        candidate = encode(middle)
        encodes += 1
        if len(candidate) <= budget:
            low, best = middle, candidate
        else:
            high = middle
    return Fitted(best, low, over_budget=False)


def _formats(preset: Preset, alpha: bool, spec: RenderSpec) -> list[str]:
    """What the preset asks for; its "jpeg" is PNG for an image with alpha. VARIANT_AVIF adds
    AVIF to every preset."""
    wanted = [("png" if alpha else "jpeg") if f == "jpeg" else f for f in preset.formats]
    if spec.avif and "avif" not in wanted:
        wanted.append("avif")
    return wanted


def _normalise(image: Image.Image) -> Image.Image:
    """Upright (EXIF orientation applied), sRGB, RGB or RGBA, first frame, no metadata."""
    image.seek(0)
    icc = image.info.get("icc_profile")
    upright = ImageOps.exif_transpose(image)  # a new image; the orientation is now in the pixels
    alpha = upright.mode in ("RGBA", "LA", "PA") or (
        upright.mode == "P" and "transparency" in upright.info
    )
    mode = "RGBA" if alpha else "RGB"
    if icc:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            converted = ImageCms.profileToProfile(
                upright.convert(mode), source, _SRGB, outputMode=mode
            )
            upright = converted if converted is not None else upright.convert(mode)
        except ImageCms.PyCMSError:  # a broken profile: keep the pixels as they are
            upright = upright.convert(mode)
    elif upright.mode != mode:
        upright = upright.convert(mode)
    upright.info = {}  # Pillow re-emits comments, ICC and EXIF from info unless cleared
    return upright


def _pixels(image: Image.Image) -> int:
    return image.width * image.height


def _needed(base: Image.Image, preset: Preset) -> tuple[int, int]:
    """The smallest size (base's aspect) this preset can be made from without upscaling."""
    return _needed_size(base.width, base.height, preset)


def _needed_size(width: int, height: int, preset: Preset) -> tuple[int, int]:
    if preset.max_width is None or preset.max_height is None:
        return width, height
    if preset.crop:
        fit = min(1.0, width / preset.max_width, height / preset.max_height)
        scale = max(preset.max_width * fit / width, preset.max_height * fit / height)
    else:
        scale = min(1.0, preset.max_width / width, preset.max_height / height)
    return round(width * scale), round(height * scale)


def _area(preset: Preset) -> int:
    if preset.max_width is None or preset.max_height is None:
        return 1 << 62
    return preset.max_width * preset.max_height


def _resize(image: Image.Image, preset: Preset) -> Image.Image:
    if preset.max_width is None or preset.max_height is None:
        return image
    if preset.crop:
        return _cover_crop(image, preset.max_width, preset.max_height)
    scale = min(preset.max_width / image.width, preset.max_height / image.height, 1.0)
    if scale >= 1.0:
        return image  # never upscale
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    resized = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)
    resized.info = {}
    return resized


def _cover_crop(image: Image.Image, box_w: int, box_h: int) -> Image.Image:
    """The box's shape, as large as the box allows without upscaling, from the centre."""
    fit = min(1.0, image.width / box_w, image.height / box_h)
    out_w, out_h = max(1, round(box_w * fit)), max(1, round(box_h * fit))
    scale = max(out_w / image.width, out_h / image.height)  # cover: both sides reach the box
    resized = image
    if scale < 1.0:
        size = (max(out_w, round(image.width * scale)), max(out_h, round(image.height * scale)))
        resized = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)
    left, top = (resized.width - out_w) // 2, (resized.height - out_h) // 2
    cropped = resized.crop((left, top, left + out_w, top + out_h))
    cropped.info = {}
    return cropped


def _quality(fmt: str, spec: RenderSpec, preset: Preset) -> int | None:
    """An output's quality setting (where a byte budget's search starts): the preset's own;
    else the spec's; else, for JPEG, the calibrated floor of the preset's box (jpegli reaches
    the seed's quality-85 score there with fewer bytes); None: the encoder's default."""
    if preset.quality is not None:
        return preset.quality
    if fmt == "webp":
        return spec.webp_quality
    if fmt == "jpeg":
        return spec.jpeg_quality or quality_floor("jpeg", preset)
    return None


def encode_jpeg(image: Image.Image, quality: int) -> bytes:
    """jpegli's quantisation, then mozjpeg's lossless re-optimisation into a progressive file
    (jpegli alone writes baseline): no marker is copied, so nothing but the pixels is kept.
    At each preset's floor: 0.84x the bytes of Pillow's quality 85 at the same score, at 3.4x
    its time (bench/calibration.json)."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    baseline = pyjpegli.encode(rgb.tobytes(), rgb.width, rgb.height, quality=quality)
    return bytes(mozjpeg.optimize(bytes(baseline)))


def _encode(image: Image.Image, fmt: str, spec: RenderSpec, quality: int | None) -> bytes:
    """`quality`: the preset's own setting for the lossy encoders; None: the spec's."""
    buffer = io.BytesIO()
    if fmt == "webp":
        q = spec.webp_quality if quality is None else quality
        image.save(buffer, "WEBP", quality=q, method=spec.webp_method)
    elif fmt == "jpeg":
        return encode_jpeg(
            image, quality or spec.jpeg_quality or QUALITY_FLOORS["jpeg"]["original"]
        )
    elif fmt == "png":
        image.save(buffer, "PNG", compress_level=6)
    else:
        image.save(
            buffer,
            "AVIF",
            quality=_AVIF_QUALITY if quality is None else quality,
            speed=spec.avif_speed,
        )
    return buffer.getvalue()
