"""Quality as a measured score (issue 17): SSIMULACRA2 of a variant, as a browser would decode
it, against a lossless reference resize of the same source for the same preset.

`reference(source, preset)` makes the reference: the same output size, cover-crop and
never-upscale rules as the processor's `adapters/render.py`, but one LANCZOS resize straight
from the full-size source (no `reducing_gap`, no chaining from a larger variant) and no
encoding. `score(reference, encoded)` decodes the variant with Pillow and returns its
SSIMULACRA2 score: 100 is identical, 90 visually lossless at 1:1, 80 high quality, 70 medium,
50 low, 30 very low (libjxl's reading of the scale).

The metric is the `ssimulacra2` package's (a NumPy/SciPy port of libjxl's tool: its scores
track the C++ tool's but are not bit-identical to it, so compare scores from this module with
each other, not with published figures). `score` runs the package's own steps, only keeping
the reference's half of them between calls (for the last two references): calibration
scores many candidates against one reference, and that half is a third of the work or more.
"""

from __future__ import annotations

import io
import weakref
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageCms, ImageOps
from ssimulacra2 import ssimulacra2 as _metric  # type: ignore[import-untyped]

from imagery.common.presets import Preset

_SRGB = ImageCms.createProfile("sRGB")
_Array = NDArray[np.float64]


def reference(source: Image.Image, preset: Preset) -> Image.Image:
    """The lossless reference for `preset`: upright (EXIF orientation applied), sRGB (an
    embedded ICC profile converted), RGB, then fitted inside the preset's box, or for a crop
    preset scaled to cover it and cut from the centre, never upscaled, with one LANCZOS
    resize from full size. Its size and crop window are the ones render.py gives the variant,
    so a score measures resampling and encoding, never a shifted frame. Opaque images only:
    SSIMULACRA2 of an image with alpha depends on the background it is shown on."""
    image = _srgb(source)
    if preset.max_width is None or preset.max_height is None:
        return image
    width, height = image.size
    box_w, box_h = preset.max_width, preset.max_height
    if not preset.crop:
        scale = min(box_w / width, box_h / height, 1.0)
        if scale >= 1.0:
            return image
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        return image.resize(size, Image.Resampling.LANCZOS)
    fit = min(1.0, width / box_w, height / box_h)
    out_w, out_h = max(1, round(box_w * fit)), max(1, round(box_h * fit))
    scale = max(out_w / width, out_h / height)
    covering = image
    if scale < 1.0:
        size = (max(out_w, round(width * scale)), max(out_h, round(height * scale)))
        covering = image.resize(size, Image.Resampling.LANCZOS)
    left, top = (covering.width - out_w) // 2, (covering.height - out_h) // 2
    return covering.crop((left, top, left + out_w, top + out_h))


def score(reference: Image.Image, encoded: bytes) -> float:
    """SSIMULACRA2 of `encoded` (any format Pillow decodes) against `reference`. No resize is
    involved when the sizes agree, as they do for the processor's variants. A candidate made
    by another pipeline may round a side the other way: when each side differs by at most one
    pixel, the decoded candidate is resized (LANCZOS) to the reference's size first, which
    costs it a little score; a larger difference is a different image and raises ValueError.
    """
    with Image.open(io.BytesIO(encoded)) as decoded:
        decoded.load()
        if decoded.mode in ("RGBA", "LA", "PA") or "transparency" in decoded.info:
            raise ValueError("score compares opaque images only")
        candidate = decoded.convert("RGB")
    if candidate.size != reference.size:
        if any(abs(a - b) > 1 for a, b in zip(candidate.size, reference.size, strict=True)):
            raise ValueError(
                f"candidate is {candidate.width}x{candidate.height}, "
                f"reference {reference.width}x{reference.height}"
            )
        candidate = candidate.resize(reference.size, Image.Resampling.LANCZOS)
    return _compare(_prepared(reference), _linear(candidate))


def _srgb(source: Image.Image) -> Image.Image:
    upright = ImageOps.exif_transpose(source)
    if upright.mode in ("RGBA", "LA", "PA") or "transparency" in upright.info:
        raise ValueError("reference and score compare opaque images only")
    icc = source.info.get("icc_profile")
    rgb = upright.convert("RGB")
    if icc:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        converted = ImageCms.profileToProfile(rgb, profile, _SRGB, outputMode="RGB")
        rgb = converted if converted is not None else rgb
    rgb.info = {}
    return rgb


@dataclass(frozen=True, slots=True)
class _Scale:
    xyb: _Array
    mean: _Array  # blurred xyb
    square_mean: _Array  # blurred xyb * xyb


def _linear(image: Image.Image) -> _Array:
    result: _Array = _metric.srgb_to_linear(np.asarray(image, dtype=np.float64))
    return result


def _xyb(linear: _Array) -> _Array:
    result: _Array = _metric.make_positive_xyb(_metric.linear_rgb_to_xyb(linear))
    return result


def _scales(linear: _Array) -> list[_Array]:
    """XYB at each of the metric's scales (halved each time, in linear light)."""
    out = []
    for scale in range(_metric.kNumScales):
        if linear.shape[0] < 8 or linear.shape[1] < 8:
            break
        out.append(_xyb(linear))
        if scale < _metric.kNumScales - 1:
            linear = _metric.downsample(linear, 2, 2)
    return out


_cache: dict[int, tuple[weakref.ref[Image.Image], list[_Scale]]] = {}


def _prepared(reference: Image.Image) -> list[_Scale]:
    """The reference's half of the metric, kept while the reference lives (the last two)."""
    key = id(reference)
    hit = _cache.get(key)
    if hit is not None and hit[0]() is reference:
        return hit[1]
    scales = [
        _Scale(xyb, _metric.blur_image(xyb), _metric.blur_image(xyb * xyb))
        for xyb in _scales(_linear(reference))
    ]
    while len(_cache) >= 2:
        del _cache[next(iter(_cache))]
    _cache[key] = (weakref.ref(reference, lambda _: _cache.pop(key, None)), scales)
    return scales


def _compare(reference: list[_Scale], candidate_linear: _Array) -> float:
    msssim = _metric.Msssim()
    for ref, xyb in zip(reference, _scales(candidate_linear), strict=True):
        mean = _metric.blur_image(xyb)
        scale = _metric.MsssimScale()
        scale.avg_ssim = _metric.ssim_map(
            ref.mean,
            mean,
            ref.square_mean,
            _metric.blur_image(xyb * xyb),
            _metric.blur_image(ref.xyb * xyb),
        )
        scale.avg_edgediff = _metric.edge_diff_map(ref.xyb, ref.mean, xyb, mean)
        msssim.scales.append(scale)
    return float(msssim.score())
