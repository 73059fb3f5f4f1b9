"""Byte budgets: a preset's `max_bytes` searches the encoder quality by size alone, from the
encoder's normal quality down to its calibrated floor and never below it; what the floor
cannot fit is kept and marked over budget."""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from imagery.common.presets import DEFAULT_PRESETS, Preset
from imagery.processor.adapters.render import (
    MAX_BUDGET_ENCODES,
    Fitted,
    encode_jpeg,
    fit_budget,
    render,
)
from imagery.processor.imaging import (
    QUALITY_FLOORS,
    Rendered,
    RenderSpec,
    floor_box,
    quality_floor,
)

CALIBRATION = Path(__file__).parents[2] / "bench" / "calibration.json"
SMALL = Preset("small", 400, 400, formats=("jpeg",))


def _photo(width: int = 400, height: int = 300) -> Image.Image:
    """Detail at every scale (a fractal over gradients), so quality changes the size."""
    detail = Image.effect_mandelbrot((width, height), (-2.0, -1.2, 0.8, 1.2), 100)
    across = Image.linear_gradient("L").resize((width, height))
    around = Image.radial_gradient("L").resize((width, height))
    return Image.merge("RGB", (detail, across, around))


def _jpeg(image: Image.Image) -> Callable[[int], bytes]:
    return lambda quality: encode_jpeg(image, quality)


class Counting:
    """An encoder that remembers each quality it was asked for and the size it gave."""

    def __init__(self, encode: Callable[[int], bytes]) -> None:
        self._encode = encode
        self.sizes: dict[int, int] = {}
        self.calls: list[int] = []

    def __call__(self, quality: int) -> bytes:
        body = self._encode(quality)
        self.calls.append(quality)
        self.sizes[quality] = len(body)
        return body


def test_a_budget_the_normal_quality_fits_takes_one_encode() -> None:
    encode = Counting(_jpeg(_photo()))
    fitted = fit_budget(encode, start=95, floor=85, budget=10**7)
    assert encode.calls == [95]
    assert (fitted.quality, fitted.over_budget) == (95, False)


def test_a_tighter_budget_takes_the_highest_quality_that_fits_within_the_encode_bound() -> None:
    encode = Counting(_jpeg(_photo()))
    at_floor, at_start = len(encode(85)), len(encode(95))
    assert at_floor < at_start, "the test image must shrink with quality"
    encode.calls.clear()
    budget = (at_floor + at_start) // 2

    fitted = fit_budget(encode, start=95, floor=85, budget=budget)

    assert len(fitted.body) <= budget and not fitted.over_budget
    assert 85 <= fitted.quality < 95
    assert encode.calls[:2] == [95, 85] and len(encode.calls) <= MAX_BUDGET_ENCODES
    assert encode.sizes[fitted.quality + 1] > budget, "one step up was measured and is over"
    assert fitted.body == _jpeg(_photo())(fitted.quality)


def test_a_budget_even_the_floor_cannot_fit_keeps_the_floor_and_is_over_budget() -> None:
    encode = Counting(_jpeg(_photo()))
    fitted = fit_budget(encode, start=95, floor=85, budget=1_024)
    assert encode.calls == [95, 85]
    assert fitted == Fitted(encode._encode(85), 85, over_budget=True)
    assert len(fitted.body) > 1_024


def test_the_search_never_goes_below_the_floor_and_a_floor_above_the_start_raises_it() -> None:
    encode = Counting(_jpeg(_photo()))
    fitted = fit_budget(encode, start=80, floor=90, budget=1_024)
    assert encode.calls == [90] and (fitted.quality, fitted.over_budget) == (90, True)
    encode.calls.clear()
    fits = fit_budget(encode, start=80, floor=90, budget=10**7)
    assert encode.calls == [90] and (fits.quality, fits.over_budget) == (90, False)


def test_without_a_floor_only_the_normal_quality_is_tried() -> None:
    encode = Counting(_jpeg(_photo()))
    fitted = fit_budget(encode, start=60, floor=None, budget=1_024)
    assert encode.calls == [60] and fitted.over_budget


def _rendered(preset: Preset, spec: RenderSpec, image: Image.Image) -> list[Rendered]:
    return render(image, dataclasses.replace(spec, presets=(preset,)))


def test_render_fits_each_lossy_output_under_its_budget_and_marks_none_over() -> None:
    spec = RenderSpec(jpeg_quality=95, webp_quality=95)
    unbudgeted = {v.format: v for v in _rendered(Preset("small", 400, 400), spec, _photo())}
    budget = len(unbudgeted["jpeg"].body) * 3 // 4
    budgeted = _rendered(Preset("small", 400, 400, max_bytes=budget), spec, _photo())
    for variant in budgeted:
        assert len(variant.body) <= budget, variant.format
        assert (variant.over_budget, variant.max_bytes) == (False, budget)
        assert Image.open(io.BytesIO(variant.body)).size == (400, 300)
    roomy = _rendered(Preset("small", 400, 400, max_bytes=10**7), spec, _photo())
    assert [v.body for v in roomy] == [v.body for v in unbudgeted.values()], (
        "a budget the normal quality fits changes nothing"
    )


def test_render_keeps_the_floor_output_of_an_impossible_budget_and_marks_it() -> None:
    preset = dataclasses.replace(SMALL, max_bytes=1_024)
    (variant,) = _rendered(preset, RenderSpec(), _photo())
    assert variant.over_budget and variant.max_bytes == 1_024
    assert variant.body == _jpeg(_photo())(quality_floor("jpeg", SMALL) or 0)


def test_a_png_fallback_has_no_quality_and_is_only_marked() -> None:
    image = _photo().convert("RGBA")
    image.putalpha(128)
    (variant,) = _rendered(dataclasses.replace(SMALL, max_bytes=1_024), RenderSpec(), image)
    assert variant.format == "png" and variant.over_budget
    (plain,) = _rendered(SMALL, RenderSpec(), image)
    assert variant.body == plain.body and not plain.over_budget


def test_the_default_presets_take_their_own_floors() -> None:
    assert [floor_box(p) for p in DEFAULT_PRESETS] == [p.name for p in DEFAULT_PRESETS]


@pytest.mark.parametrize(
    ("box", "expected"),
    [
        ((64, 64), "thumbnail"),
        ((150, 150), "thumbnail"),
        ((300, 120), "small"),  # 300: nearer 400 than 150
        ((275, 100), "small"),  # halfway between 150 and 400: the larger box
        ((100, 600), "medium"),  # the longer side decides
        ((1100, 1100), "medium"),
        ((1300, 900), "large"),
        ((8000, 8000), "large"),
        ((None, None), "original"),
    ],
)
def test_a_custom_box_takes_the_floor_of_the_nearest_default_box(
    box: tuple[int | None, int | None], expected: str
) -> None:
    preset = Preset("custom", *box)
    assert floor_box(preset) == expected
    for encoder, floors in QUALITY_FLOORS.items():
        assert quality_floor(encoder, preset) == floors[expected]
    assert quality_floor("avif", preset) is None


def test_the_floors_are_the_calibrated_qualities_of_the_encoders_in_use() -> None:
    calibration = json.loads(CALIBRATION.read_text())
    candidates = calibration["candidates"]
    jpeg = candidates["jpegli + mozjpeg"]
    pillow_webp = candidates[f"WebP m{RenderSpec().webp_method}"]
    assert calibration["jpeg"]["encoder"] == "jpegli + mozjpeg", "the encoder in use"
    assert QUALITY_FLOORS["jpeg"] == {name: c["quality"] for name, c in jpeg.items()}
    assert QUALITY_FLOORS["webp"] == {name: c["quality"] for name, c in pillow_webp.items()}
