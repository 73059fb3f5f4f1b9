"""Variants: metadata-free, sRGB, re-encoded renditions of a verified image. Runs in the
isolated job process, on the image `verify_then` already decoded.

For speed, each size is resized from the previous, larger one with `reducing_gap` (one
expensive full-size pass, then cheap ones), never with `Image.copy()` (a full-size copy costs
time and memory). JPEG draft (DCT-scaled) decoding helps only when no full-size output is
wanted; verification decodes every byte anyway.
"""

from __future__ import annotations

import io

from PIL import Image, ImageCms, ImageOps

from imagery.common.errors import FailureReason
from imagery.common.formats import content_type_of
from imagery.common.presets import Preset
from imagery.processor.adapters.verify import verify_then
from imagery.processor.imaging import Limits, Processed, Rejected, Rendered, RenderSpec

_SRGB = ImageCms.createProfile("sRGB")


def verify_and_render(
    data: bytes, content_type: str, limits: Limits, spec: RenderSpec
) -> Processed:
    """The whole job. Anything the bytes make a decoder or encoder raise is the file's fault:
    it ends as `Rejected`, never as an error that would be retried."""
    try:
        verified, variants = verify_then(
            data,
            content_type,
            limits,
            lambda image, _: render(image, spec),
            lambda size: _draft_size(size, spec),
        )
    except (Rejected, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - decoders raise whatever the bytes lead them to
        raise Rejected(FailureReason.UNPROCESSABLE, f"{type(exc).__name__}: {exc}"[:200]) from None
    return Processed(verified, tuple(variants or ()))


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
    base = _normalise(image)
    alpha = base.mode == "RGBA"
    outputs = []
    made = [base]  # largest first; each preset starts from the smallest that still covers it
    for preset in sorted(spec.presets, key=_area, reverse=True):
        need_w, need_h = _needed(base, preset)
        source = min((m for m in made if m.width >= need_w and m.height >= need_h), key=_pixels)
        current = _resize(source, preset)
        made.append(current)
        for fmt in _formats(preset, alpha, spec):
            outputs.append(
                Rendered(
                    preset.name,
                    fmt,
                    content_type_of(fmt),
                    current.width,
                    current.height,
                    _encode(current, fmt, spec, preset.quality),
                )
            )
    return outputs


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


def _encode(image: Image.Image, fmt: str, spec: RenderSpec, quality: int | None) -> bytes:
    """`quality`: the preset's own setting for the lossy encoders; None: the spec's."""
    buffer = io.BytesIO()
    if fmt == "webp":
        q = spec.webp_quality if quality is None else quality
        image.save(buffer, "WEBP", quality=q, method=spec.webp_method)
    elif fmt == "jpeg":
        q = spec.jpeg_quality if quality is None else quality
        image.save(buffer, "JPEG", quality=q, optimize=True, progressive=True)
    elif fmt == "png":
        image.save(buffer, "PNG", compress_level=6)
    else:
        image.save(
            buffer, "AVIF", quality=60 if quality is None else quality, speed=spec.avif_speed
        )
    return buffer.getvalue()
