"""Photos for measuring quality (bench/calibrate.py): the bench's 12 MP JPEG and two
natural-looking ones with other content, each as the processor sees it, decoded from the
uploaded JPEG. The photos `bench.processor.distinct()` makes differ only by a 12-pixel mark,
so for quality they count as one; these differ in what encoders find hard:

- bench 4000x3000 (`bench.processor.photo`): gradient, fractal and full-resolution noise in
  the blue channel alone, chroma detail that 4:2:0 subsampling cannot keep;
- landscape 3000x4000 (portrait orientation): smooth sky and clouds (banding), hard-edged
  buildings with fine lines (ringing), textured grass, lens blur and luma grain;
- texture 3264x2448 (8 MP): a close-up of multi-scale detail and grain (blurring).
"""

from __future__ import annotations

import io
from functools import cache
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFilter

from bench.processor import photo

PHOTOS = ("bench 4000x3000", "landscape 3000x4000", "texture 3264x2448")
_Array = NDArray[np.float32]


@cache
def source(name: str) -> Image.Image:
    """The named photo, decoded (cached: each takes seconds to make)."""
    if name == PHOTOS[0]:
        return _decoded(photo(4000, 3000, "JPEG"))
    made = landscape(3000, 4000) if name == PHOTOS[1] else texture(3264, 2448)
    buffer = io.BytesIO()
    made.save(buffer, "JPEG", quality=90)  # as a camera would upload it
    return _decoded(buffer.getvalue())


def landscape(width: int, height: int) -> Image.Image:
    rng = np.random.default_rng(17)
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    sky = np.concatenate([0.35 + 0.45 * y, 0.55 + 0.35 * y, 0.95 - 0.1 * y], 2)
    clouds = np.clip(_field(rng, (width, height), (400, 160, 60, 20)) * 1.8 - 0.8, 0, 1)[..., None]
    sky = sky * (1 - clouds) + clouds * 0.97
    horizon = (0.55 + 0.08 * (_field(rng, (width, 1), (300, 60, 15))[0] - 0.5)) * height
    grain = _field(rng, (width, height), (120, 30, 8, 3, 1))[..., None]
    grass = np.concatenate([0.25 + 0.35 * grain, 0.35 + 0.4 * grain, 0.1 + 0.15 * grain], 2)
    ground = (np.arange(height)[:, None] > horizon[None, :])[..., None]
    image = Image.fromarray((np.clip(np.where(ground, grass, sky), 0, 1) * 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(12):  # buildings: hard edges, flat areas, fine lines
        left, side = int(rng.integers(0, width)), int(rng.integers(width // 40, width // 8))
        top = int(rng.integers(height // 4, height // 2))
        base = int(horizon[min(left, width - 1)]) + height // 20
        red, green, blue = (int(c) for c in rng.integers(40, 230, 3))
        draw.rectangle((left, top, left + side, base), fill=(red, green, blue))
        for row in range(top + 20, base, max(8, height // 150)):
            line = (left + 5, row, left + side - 5, row)
            draw.line(line, fill=(red // 2, green // 2, blue // 2), width=2)
    return _camera(np.asarray(image, np.float32) / 255, rng, blur=1.0, noise=3.0)


def texture(width: int, height: int) -> Image.Image:
    rng = np.random.default_rng(18)
    fine = _field(rng, (width, height), (64, 16, 4, 2))
    hue = _field(rng, (width, height), (500, 150))
    box = (-0.7453, 0.1127, -0.7433, 0.1142)
    fractal = np.asarray(Image.effect_mandelbrot((width, height), box, 200), np.float32) / 255
    lum = 0.2 + 0.7 * fine * (0.5 + 0.5 * fractal)
    channels = [lum * (0.6 + 0.8 * hue), lum * (1.3 - 0.6 * hue), lum * (0.7 + 0.4 * fractal)]
    return _camera(np.stack(channels, -1), rng, blur=0.7, noise=4.0)


def _field(rng: np.random.Generator, size: tuple[int, int], cells: tuple[int, ...]) -> _Array:
    """Smooth random detail in [0, 1]: noise at 1/cell of the resolution, upscaled, summed
    over octaves."""
    width, height = size
    total, weight, amplitude = np.zeros((height, width), np.float32), 0.0, 1.0
    for cell in cells:
        small = rng.random((max(2, height // cell), max(2, width // cell)), dtype=np.float32)
        upscaled = Image.fromarray(small, "F").resize(size, Image.Resampling.BICUBIC)
        total += amplitude * np.asarray(upscaled, np.float32)
        weight, amplitude = weight + amplitude, amplitude * 0.7
    return total / weight


def _camera(
    rgb: NDArray[np.floating[Any]], rng: np.random.Generator, *, blur: float, noise: float
) -> Image.Image:
    """Lens blur, then luma sensor noise."""
    lens = Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8), "RGB")
    soft = np.asarray(lens.filter(ImageFilter.GaussianBlur(blur)), np.float32)
    grain = rng.normal(0, noise, (*soft.shape[:2], 1)).astype(np.float32)
    return Image.fromarray(np.clip(soft + grain, 0, 255).astype(np.uint8), "RGB")


def _decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image
