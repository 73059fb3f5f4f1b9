"""Placeholders, colours and the pHash computed in the job (`adapters/insights.py`), how they
cross back from the job (jobwire), and the profile setting of the BlurHash components."""

from __future__ import annotations

import io
import math
import socket
import statistics

import pytest
from PIL import Image

from imagery.common.errors import InvalidArgument
from imagery.common.presets import DEFAULT_PRESETS
from imagery.common.profiles import VariantProfile, profile_from_json, validate_profile
from imagery.processor.adapters import jobwire
from imagery.processor.adapters.insights import hamming, insights, phash
from imagery.processor.adapters.render import verify_and_render
from imagery.processor.imaging import Limits, Processed, RenderSpec


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_a_solid_colour_is_its_own_average_and_only_dominant_colour() -> None:
    found = insights(Image.new("RGB", (300, 200), (12, 200, 99)), (4, 3))
    assert found.average_color == "#0cc863"
    assert found.dominant_colors == (("#0cc863", 1.0),)
    assert found.blurhash[0] == "L" and len(found.blurhash) == 28  # 4x3 components
    assert 0 < len(found.thumbhash) <= 25


def test_transparent_pixels_count_for_nothing() -> None:
    image = Image.new("RGBA", (100, 100), (0, 0, 0, 0))
    image.paste((255, 0, 0, 255), (0, 0, 50, 100))
    found = insights(image, (4, 3))
    assert found.average_color == "#ff0000"
    assert found.dominant_colors == (("#ff0000", 1.0),)
    nothing = insights(Image.new("RGBA", (40, 40), (9, 9, 9, 0)), (4, 3))
    assert (nothing.average_color, nothing.dominant_colors) == ("", ())


def test_dominant_colours_come_with_their_shares_largest_first() -> None:
    image = Image.new("RGB", (400, 400), (255, 255, 255))
    image.paste((0, 0, 255), (0, 0, 400, 300))
    colors = insights(image, (4, 3)).dominant_colors
    assert [c for c, _ in colors] == ["#0000ff", "#ffffff"]
    assert [s for _, s in colors] == pytest.approx([0.75, 0.25], abs=0.04)


def test_the_blurhash_has_the_components_asked_for() -> None:
    image = Image.radial_gradient("L").convert("RGB")
    assert len(insights(image, (1, 1)).blurhash) == 6
    assert len(insights(image, (9, 9)).blurhash) == 6 + 2 * 80


def _reference_phash(image: Image.Image) -> int:
    """imagehash.phash's definition, written out: an orthogonal DCT-II of the 32x32 greyscale,
    its 8x8 lowest frequencies above their median."""
    grey = image.convert("L").resize((32, 32), Image.Resampling.LANCZOS)
    data = grey.tobytes()
    pixels = [list(data[y * 32 : y * 32 + 32]) for y in range(32)]

    def coefficient(v: int, u: int) -> float:
        return sum(
            pixels[y][x]
            * math.cos(math.pi * u * (2 * x + 1) / 64)
            * math.cos(math.pi * v * (2 * y + 1) / 64)
            for y in range(32)
            for x in range(32)
        )

    low = [coefficient(v, u) for v in range(8) for u in range(8)]
    median = statistics.median(low)
    bits = int("".join("1" if c > median else "0" for c in low), 2)
    return bits - (1 << 64) if bits >= 1 << 63 else bits


def test_the_phash_is_the_dct_hash_and_a_signed_64_bit_integer() -> None:
    image = Image.merge(
        "RGB",
        [
            Image.linear_gradient("L").resize((90, 60)),
            Image.effect_noise((90, 60), 40),
            Image.radial_gradient("L").resize((90, 60)),
        ],
    )
    value = phash(image)
    assert value == _reference_phash(image)
    assert -(1 << 63) <= value < 1 << 63
    assert hamming(value, value ^ 0b1011) == 3


def test_the_job_answers_with_insights_that_cross_the_wire() -> None:
    body = _png(Image.new("RGB", (640, 480), (255, 0, 0)))
    processed = verify_and_render(
        body, "image/png", Limits(), RenderSpec(presets=DEFAULT_PRESETS, blurhash_components=(3, 3))
    )
    assert processed.insights is not None
    assert processed.insights.average_color == "#ff0000"
    assert processed.insights.blurhash[0] == "K"  # (3 - 1) + (3 - 1) * 9 = 20
    job, processor = socket.socketpair()
    with job, processor:
        jobwire.send(job, processed)
        decoded = jobwire.receive(processor, max_blob_bytes=len(body) * 100)
    assert isinstance(decoded, Processed) and decoded == processed


def test_the_blurhash_components_are_a_profile_setting_of_1_to_9_each() -> None:
    profile = validate_profile(DEFAULT_PRESETS[:2], "fallback", blurhash_components=(9, 1))
    assert profile.blurhash_components == (9, 1)
    again = profile_from_json(profile.to_json())
    assert again is not None and again.blurhash_components == (9, 1)
    assert VariantProfile(0, DEFAULT_PRESETS).blurhash_components == (4, 3)
    assert "blurhash_components" not in VariantProfile(0, DEFAULT_PRESETS).to_json()
    for wrong, field in (((0, 3), "x"), ((4, 10), "y")):
        with pytest.raises(InvalidArgument) as refused:
            validate_profile(DEFAULT_PRESETS[:2], "fallback", blurhash_components=wrong)
        (violation,) = refused.value.violations
        assert violation.field == f"variant_profile.blurhash_components.{field}"


@pytest.mark.parametrize("size", [(1, 1), (1, 2000), (3000, 2)])
def test_tiny_and_extreme_shapes_get_insights_too(size: tuple[int, int]) -> None:
    body = _png(Image.new("RGBA", size, (10, 20, 30, 255)))
    processed = verify_and_render(body, "image/png", Limits(), RenderSpec())
    assert processed.insights is not None
    assert processed.insights.average_color == "#0a141e"
    assert processed.insights.thumbhash and processed.insights.blurhash
