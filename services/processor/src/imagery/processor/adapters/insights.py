"""Placeholders, colours and a perceptual hash of an image, computed in the job from small
reductions of the normalised image (never from the full size: the cost must stay a small
fraction of the job's). Everything but the pHash reads a reduction that fits 32x32: ThumbHash
and BlurHash keep only the lowest frequencies (at most 7 and 9 per axis), which 32 samples
hold, and the encoders' cost grows with the pixels.

- ThumbHash: `fast-thumbhash` (the reference `thumbhash` crate, in Rust).
- BlurHash: `blurhash-rs` (in Rust; the same hashes as Wolt's C encoder, whose Python wrapper
  reads pixels with a Pillow call Pillow deprecates), the profile's components.
- Average colour: of the visible pixels (weighted by alpha).
- Dominant colours: Pillow's fast octree quantisation to five colours, transparent pixels left
  out, each with its share.
- pHash: the DCT hash of `imagehash.phash` (32x32 greyscale from a 64 px reduction, the 8x8
  lowest frequencies against their median, row-major, first bit highest), computed here in
  plain Python: numpy would load OpenBLAS, which starts threads in the job host that forks
  every job, and imagehash would add numpy, scipy and PyWavelets for one DCT of 32x32.
"""

from __future__ import annotations

import math
import operator
import statistics

import fast_thumbhash  # type: ignore[import-untyped]
from blurhash_rs import blurhash_encode
from PIL import Image

from imagery.processor.imaging import Insights

PHASH_SOURCE_SIDE = 64  # the reduction the pHash's 32x32 is resampled from
PLACEHOLDER_SIDE = 32  # the reduction the placeholders and colours read
DOMINANT_COLORS = 5
_PHASH_SIDE = 32
_PHASH_LOW = 8
# The DCT-II basis of the 8 lowest frequencies over 32 samples (scale does not matter: the
# bits compare coefficients with their median).
_DCT = [
    [math.cos(math.pi * k * (2 * n + 1) / (2 * _PHASH_SIDE)) for n in range(_PHASH_SIDE)]
    for k in range(_PHASH_LOW)
]


def insights(image: Image.Image, components: tuple[int, int]) -> Insights:
    """`image`: upright, sRGB, RGB or RGBA (render's normalised image, or any reduction of it
    that keeps its aspect ratio)."""
    small = _fit(image, PHASH_SOURCE_SIDE)
    tiny = _fit(small, PLACEHOLDER_SIDE)
    rgba = tiny.convert("RGBA") if tiny.mode != "RGBA" else tiny
    return Insights(
        thumbhash=bytes(fast_thumbhash.rgba_to_thumb_hash(rgba.width, rgba.height, rgba.tobytes())),
        blurhash=blurhash_encode(rgba.convert("RGB"), components[0], components[1]),
        average_color=average_color(rgba),
        dominant_colors=dominant_colors(rgba),
        phash=phash(small),
    )


def _fit(image: Image.Image, side: int) -> Image.Image:
    if image.width <= side and image.height <= side:
        return image
    scale = min(side / image.width, side / image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BOX, reducing_gap=2.0)


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def average_color(rgba: Image.Image) -> str:
    """The alpha-weighted mean colour; "" when no pixel is visible."""
    data = rgba.tobytes()
    alpha = data[3::4]
    weight = sum(alpha)
    if not weight:
        return ""
    red, green, blue = (sum(map(operator.mul, data[i::4], alpha)) for i in range(3))
    return _hex((round(red / weight), round(green / weight), round(blue / weight)))


def dominant_colors(rgba: Image.Image) -> tuple[tuple[str, float], ...]:
    """Up to five ("#rrggbb", share) of the visible pixels (alpha >= 128), largest first."""
    quantized = rgba.quantize(DOMINANT_COLORS, method=Image.Quantize.FASTOCTREE)
    palette = quantized.getpalette(rawmode="RGBA") or []
    counts: dict[str, int] = {}
    for count, index in quantized.getcolors(DOMINANT_COLORS * 4) or []:
        start = int(index) * 4  # type: ignore[arg-type]  # a palette index in "P" mode
        r, g, b, a = palette[start : start + 4]
        if a >= 128:
            color = _hex((r, g, b))
            counts[color] = counts.get(color, 0) + count
    total = sum(counts.values())
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:DOMINANT_COLORS]
    return tuple((color, round(count / total, 4)) for color, count in ranked)


def phash(image: Image.Image) -> int:
    """The 64-bit DCT perceptual hash as a signed integer (Postgres' bigint)."""
    grey = image.convert("L").resize((_PHASH_SIDE, _PHASH_SIDE), Image.Resampling.LANCZOS)
    pixels = grey.tobytes()
    rows = [pixels[i : i + _PHASH_SIDE] for i in range(0, len(pixels), _PHASH_SIDE)]
    # Along each row, then down each of the 8 kept columns: only the 8x8 corner is needed.
    across = [[sum(map(operator.mul, row, basis)) for basis in _DCT] for row in rows]
    low = [
        sum(map(operator.mul, (across[n][u] for n in range(_PHASH_SIDE)), _DCT[v]))
        for v in range(_PHASH_LOW)
        for u in range(_PHASH_LOW)
    ]
    median = statistics.median(low)
    value = 0
    for coefficient in low:
        value = (value << 1) | (coefficient > median)
    return value - (1 << 64) if value >= 1 << 63 else value


def hamming(a: int, b: int) -> int:
    return ((a ^ b) & ((1 << 64) - 1)).bit_count()
