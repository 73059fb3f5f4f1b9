"""Variants read back: sizes, crops, orientation, colour, and no metadata of any kind."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageCms, PngImagePlugin

from imagery.common.presets import DEFAULT_PRESETS, Preset
from imagery.processor.adapters.render import verify_and_render
from imagery.processor.imaging import Limits, Processed, Rejected, RenderSpec
from tests import images

SPEC = RenderSpec()


def _render(data: bytes, content_type: str, spec: RenderSpec = SPEC) -> Processed:
    return verify_and_render(data, content_type, Limits(), spec)


def _open(body: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(body))
    image.load()
    return image


def _rgba(image: Image.Image, x: int, y: int) -> tuple[int, ...]:
    pixel = image.getpixel((x, y))
    assert isinstance(pixel, tuple)
    return pixel


def _by_name(processed: Processed) -> dict[tuple[str, str], Image.Image]:
    return {(v.name, v.format): _open(v.body) for v in processed.variants}


def test_every_preset_in_webp_and_jpeg_with_exact_sizes() -> None:
    out = _by_name(_render(images.jpeg(4000, 3000), "image/jpeg"))
    expected = {
        "thumbnail": (150, 150),
        "small": (400, 300),
        "medium": (800, 600),
        "large": (1600, 1200),
        "original": (4000, 3000),
    }
    assert set(out) == {(name, fmt) for name in expected for fmt in ("webp", "jpeg")}
    for (name, fmt), image in out.items():
        assert image.size == expected[name], (name, fmt)
        assert image.format == {"webp": "WEBP", "jpeg": "JPEG"}[fmt]


def test_never_upscaled_and_the_thumbnail_of_a_small_image_is_a_centre_square() -> None:
    out = _by_name(_render(images.png(120, 90), "image/png"))
    assert {name: image.size for (name, fmt), image in out.items() if fmt == "webp"} == {
        "thumbnail": (90, 90),
        "small": (120, 90),
        "medium": (120, 90),
        "large": (120, 90),
        "original": (120, 90),
    }


def test_cover_crop_takes_the_centre() -> None:
    wide = Image.new("RGB", (600, 200), "red")
    wide.paste((0, 0, 255), (200, 0, 400, 200))  # a blue centre third
    buffer = io.BytesIO()
    wide.save(buffer, "PNG")
    thumb = _by_name(_render(buffer.getvalue(), "image/png"))[("thumbnail", "jpeg")]
    assert thumb.size == (150, 150)
    for x in (2, 75, 147):  # 150 px of a 450 px wide resize: all inside the blue centre third
        red, _, blue = _rgba(thumb.convert("RGB"), x, 75)[:3]
        assert blue > 200 and red < 60, x


def test_a_portrait_photo_with_orientation_6_comes_out_portrait() -> None:
    out = _by_name(_render(images.jpeg(640, 480, orientation=6), "image/jpeg"))
    assert out[("original", "jpeg")].size == (480, 640)
    assert out[("small", "webp")].size == (300, 400)


def _loaded_with_metadata() -> bytes:
    """A JPEG with EXIF (GPS), an XMP packet, a comment and an Adobe RGB ICC profile."""
    image = Image.new("RGB", (300, 200), (180, 40, 40))
    exif = Image.Exif()
    exif[0x010F] = "SpyCam"  # Make
    exif[0x8825] = {1: "N", 2: (52.0, 31.0, 0.0), 3: "E", 4: (13.0, 24.0, 0.0)}  # GPS IFD
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    buffer = io.BytesIO()
    image.save(
        buffer,
        "JPEG",
        exif=exif.tobytes(),
        comment=b"secret comment",
        icc_profile=icc,
        xmp=b'<x:xmpmeta xmlns:x="adobe:ns:meta/">secret-xmp</x:xmpmeta>',
    )
    return buffer.getvalue()


def _loaded_png_with_text() -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "secret author")
    info.add_itxt("Comment", "secret text chunk")
    buffer = io.BytesIO()
    Image.new("RGBA", (100, 80), (0, 128, 0, 100)).save(
        buffer,
        "PNG",
        pnginfo=info,
        icc_profile=ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes(),
    )
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "content_type"),
    [(_loaded_with_metadata(), "image/jpeg"), (_loaded_png_with_text(), "image/png")],
)
def test_no_metadata_survives_in_any_output(data: bytes, content_type: str) -> None:
    processed = _render(data, content_type)
    assert b"secret" in data, "the input really carries it"
    for variant in processed.variants:
        body = variant.body
        assert b"secret" not in body, (variant.name, variant.format)
        assert b"SpyCam" not in body and b"Exif\x00\x00" not in body and b"ICC_PROFILE" not in body
        image = _open(body)
        assert not image.getexif(), (variant.name, variant.format)
        assert (
            "icc_profile" not in image.info
            and "comment" not in image.info
            and "xmp" not in image.info
        )
        assert not {k for k in image.info if k in ("Author", "Comment", "exif")}


def test_alpha_is_kept_in_a_png_fallback() -> None:
    out = _by_name(_render(images.png(64, 48, alpha=True), "image/png"))
    assert ("small", "png") in out and ("small", "jpeg") not in out
    assert out[("small", "png")].mode == "RGBA"
    assert _rgba(out[("small", "png")], 10, 10)[3] == 128
    assert out[("small", "webp")].mode == "RGBA"


def test_animated_input_gives_its_first_frame() -> None:
    out = _by_name(_render(images.gif(6, (40, 30)), "image/gif"))
    first = out[("original", "webp")]
    assert first.size == (40, 30) and not getattr(first, "is_animated", False)


def test_a_polyglot_payload_does_not_reach_the_outputs() -> None:
    payload = b"PK\x03\x04" + b"polyglot-zip-payload" * 10
    processed = _render(images.gif(2, (32, 32)) + payload, "image/gif")
    assert all(b"polyglot-zip-payload" not in v.body for v in processed.variants)


def test_avif_output_is_available_behind_the_setting() -> None:
    spec = RenderSpec(presets=(Preset("small", 400, 400),), avif=True)
    out = _by_name(_render(images.jpeg(800, 600), "image/jpeg", spec))
    assert set(out) == {("small", "webp"), ("small", "jpeg"), ("small", "avif")}
    assert out[("small", "avif")].size == (400, 300)


def test_default_presets_match_the_issue() -> None:
    assert [(p.name, p.max_width, p.max_height, p.crop) for p in DEFAULT_PRESETS] == [
        ("thumbnail", 150, 150, True),
        ("small", 400, 400, False),
        ("medium", 800, 800, False),
        ("large", 1600, 1600, False),
        ("original", None, None, False),
    ]


def test_the_forkserver_warm_up_exercises_every_decoder_encoder_and_colour_path() -> None:
    from imagery.common.formats import ALLOWED_CONTENT_TYPES, FORMATS
    from imagery.processor.adapters import warmup

    spec = RenderSpec(avif=True)
    samples = warmup.samples()
    made = [verify_and_render(data, ct, Limits(), spec) for data, ct in samples]

    assert [p.verified.format for p in made] == [ALLOWED_CONTENT_TYPES[ct] for _, ct in samples]
    decoders = {FORMATS[f].pillow for f in ALLOWED_CONTENT_TYPES.values()}
    assert {FORMATS[p.verified.format].pillow for p in made} == decoders, "every decoder"
    assert {v.format for p in made for v in p.variants} == {"webp", "jpeg", "png", "avif"}
    assert _open(warmup.samples()[0][0]).info.get("icc_profile"), "the colour-managed path"
    assert warmup.warm_up(spec) == sum(len(p.variants) for p in made)


def test_whatever_a_decoder_raises_on_the_bytes_is_the_files_fault() -> None:
    data = images.jpeg_with_malformed_exif()
    with pytest.raises(Rejected) as caught:
        verify_and_render(data, "image/jpeg", Limits(), RenderSpec())
    assert caught.value.reason == "UNPROCESSABLE"
    assert caught.value.detail.startswith("error:"), "struct.error, named in the detail"
