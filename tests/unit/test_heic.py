"""HEIC/HEIF input (opt-in per project): recognised by its ftyp brands, checked against the
limits from the container before libheif decodes a pixel, decoded in full, and rendered to
the same metadata-free outputs as any other input. Files made here with pillow-heif."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from imagery.common.errors import ImageryError
from imagery.common.formats import ALLOWED_CONTENT_TYPES, DEFAULT_CONTENT_TYPES, declares
from imagery.processor.adapters.containers import ContainerError, animation_budget
from imagery.processor.adapters.render import verify_and_render
from imagery.processor.adapters.verify import sniff, verify
from imagery.processor.imaging import Limits, Processed, Rejected, RenderSpec
from imagery.upload.validation import validate_content_type
from tests import images

LIMITS = Limits()
GPS_IFD, ORIENTATION = 0x8825, 0x0112


def _ftyp(major: bytes, *compatible: bytes, minor: bytes = b"\0\0\0\0") -> bytes:
    body = major + minor + b"".join(compatible)
    return (8 + len(body)).to_bytes(4, "big") + b"ftyp" + body


@pytest.mark.parametrize(
    ("data", "fmt"),
    [
        (_ftyp(b"heic", b"mif1", b"heic", b"miaf"), "heic"),  # an iPhone photo
        (_ftyp(b"mif1", b"MiHE", b"miaf", b"heic"), "heic"),  # HEVC named as compatible only
        (_ftyp(b"heix", b"mif1"), "heic"),
        (_ftyp(b"msf1", b"hevc", b"iso8"), "heic"),  # an HEVC image sequence
        (_ftyp(b"mif1", b"miaf"), "heif"),  # no codec named
        (_ftyp(b"msf1", b"iso8"), "heif"),
        (_ftyp(b"mif1", b"miaf", minor=b"heic"), "heif"),  # the minor version is no brand
        (_ftyp(b"avif", b"mif1", b"miaf"), "avif"),
        (_ftyp(b"mif1", b"avif", b"heic"), "avif"),  # an AVIF brand wins: it is never HEVC
        (_ftyp(b"heic", b"avis"), "avif"),
        (_ftyp(b"isom", b"mp41"), None),  # an MP4
        (_ftyp(b"crx ", b"isom"), None),  # a Canon raw
    ],
)
def test_the_ftyp_brands_name_heic_heif_or_avif(data: bytes, fmt: str | None) -> None:
    assert sniff(data) == fmt


def test_heic_and_heif_are_allowlisted_but_not_accepted_by_default() -> None:
    assert {"image/heic", "image/heif"} <= set(ALLOWED_CONTENT_TYPES)
    assert not {"image/heic", "image/heif"} & set(DEFAULT_CONTENT_TYPES)
    with pytest.raises(ImageryError) as caught:
        validate_content_type("image/heic")
    assert caught.value.reason == "UNSUPPORTED_CONTENT_TYPE"
    assert validate_content_type("image/heic", ("image/jpeg", "image/heic")) == "image/heic"


def test_image_heif_names_the_family_and_image_heic_only_hevc() -> None:
    assert declares("image/heic", "heic") and declares("image/heif", "heic")
    assert declares("image/heif", "heif") and not declares("image/heic", "heif")
    assert not declares("image/heif", "avif") and not declares("image/jpeg", "heic")


def test_a_heic_verifies_as_declared_with_either_type() -> None:
    data = images.heic(64, 48)
    for content_type in ("image/heic", "image/heif"):
        verified = verify(data, content_type, LIMITS)
        assert (verified.format, verified.width, verified.height, verified.frames) == (
            "heic",
            64,
            48,
            1,
        )
        assert verified.size_bytes == len(data)


def test_a_heif_without_hevc_brands_verifies_only_as_image_heif() -> None:
    data = images.heif_without_hevc_brands(images.heic(40, 30))
    assert verify(data, "image/heif", LIMITS).format == "heif"
    with pytest.raises(Rejected) as caught:
        verify(data, "image/heic", LIMITS)
    assert caught.value.reason == "CONTENT_TYPE_MISMATCH"


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (images.heic(), "image/jpeg"),
        (images.heic(), "image/avif"),
        (images.jpeg(), "image/heic"),
        (images.avif(), "image/heif"),
    ],
)
def test_a_declared_type_the_bytes_are_not_is_a_mismatch(data: bytes, content_type: str) -> None:
    with pytest.raises(Rejected) as caught:
        verify(data, content_type, LIMITS)
    assert caught.value.reason == "CONTENT_TYPE_MISMATCH"


def test_dimensions_are_as_displayed_and_variants_are_turned_once() -> None:
    # libheif applies the rotation (irot); the EXIF orientation it leaves says 1, so nothing
    # turns the picture a second time.
    processed = verify_and_render(
        images.heic(64, 48, orientation=6), "image/heic", LIMITS, RenderSpec()
    )
    assert (processed.verified.width, processed.verified.height) == (48, 64)
    original = [v for v in processed.variants if v.name == "original"]
    assert {(v.width, v.height) for v in original} == {(48, 64)}
    for variant in original:
        with Image.open(io.BytesIO(variant.body)) as image:
            assert image.size == (48, 64)
            # the top-left quarter was green before the quarter turn clockwise: now top-right
            red, green, _ = image.convert("RGB").getpixel((40, 8))  # type: ignore[misc]
            assert green > 150 and red < 100


def test_variants_are_the_usual_formats_and_carry_no_metadata() -> None:
    data = images.heic(640, 480, orientation=3, gps=True)
    with Image.open(io.BytesIO(data)) as source:
        assert source.getexif().get_ifd(GPS_IFD), "the source has a GPS position"
    processed = verify_and_render(data, "image/heic", LIMITS, RenderSpec(avif=True))
    assert {v.format for v in processed.variants} == {"webp", "jpeg", "avif"}
    for variant in processed.variants:
        with Image.open(io.BytesIO(variant.body)) as image:
            exif = image.getexif()
            assert not exif.get_ifd(GPS_IFD) and ORIENTATION not in exif, variant.name
            assert not {"exif", "xmp", "XML:com.adobe.xmp"} & set(image.info), variant.name


def test_over_sized_dimensions_are_refused_from_the_container() -> None:
    data = images.heic(640, 480)
    assert animation_budget(data, "heic", max_frames=100) == (1, 640, 480)
    with pytest.raises(Rejected) as caught:
        verify(data, "image/heic", Limits(max_side=500))
    assert caught.value.reason == "DIMENSIONS_EXCEEDED"
    with pytest.raises(Rejected, match="DIMENSIONS_EXCEEDED"):
        verify(data, "image/heic", Limits(max_pixels=100_000))


def test_several_top_level_images_are_frames_and_a_grid_is_one() -> None:
    three = images.heic(32, 24, frames=3)
    assert animation_budget(three, "heic", max_frames=100) is not None
    assert verify(three, "image/heic", LIMITS).frames == 3
    with pytest.raises(Rejected, match="more than 2 frames"):
        verify(three, "image/heic", Limits(max_frames=2))
    with pytest.raises(Rejected, match="too many pixels"):
        verify(three, "image/heic", Limits(max_total_pixels=32 * 24 * 2))
    grid = images.heic(640, 480, tile_size=128)  # 20 tiles
    assert animation_budget(grid, "heic", max_frames=100) == (1, 640, 480)
    assert verify(grid, "image/heic", LIMITS).frames == 1


@pytest.mark.parametrize("keep", [0.98, 2 / 3, 0.5, 0.2])
def test_a_truncated_heic_is_corrupt(keep: float) -> None:
    # libheif decodes a grid whose last tiles are cut off with holes: the container check
    # is what refuses it.
    data = images.heic(640, 480, tile_size=128)
    with pytest.raises(Rejected) as caught:
        verify(data[: int(len(data) * keep)], "image/heic", LIMITS)
    assert caught.value.reason == "CORRUPT"


def test_a_malformed_item_location_table_is_a_container_error() -> None:
    data = bytearray(images.heic(64, 48))
    at = data.index(b"iloc")
    data[at + 4 + 4 + 2 : at + 4 + 4 + 4] = b"\xff\xff"  # item_count: more than the box holds
    with pytest.raises(ContainerError):
        animation_budget(bytes(data), "heic", max_frames=100)
    with pytest.raises(Rejected, match="CORRUPT"):
        verify(bytes(data), "image/heic", LIMITS)


def test_the_job_ends_heic_input_like_any_other() -> None:
    processed = verify_and_render(images.heic(800, 600), "image/heic", LIMITS, RenderSpec())
    assert isinstance(processed, Processed)
    names = {v.name for v in processed.variants}
    assert names == {"thumbnail", "small", "medium", "large", "original"}


def test_extents_of_no_bytes_cost_no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """An item location table whose fields are all 0 bytes wide: 65,535 extents per item cost
    nothing to read, so without a bound a 4 KB file would spend a job's CPU counting them."""
    from imagery.processor.adapters import bmff

    items = 400
    body = bytes([1, 0, 0, 0, 0x00, 0x00]) + items.to_bytes(2, "big")
    body += b"".join(n.to_bytes(2, "big") + b"\0\0" + b"\0\0" + b"\xff\xff" for n in range(items))
    data = (8 + len(body)).to_bytes(4, "big") + b"iloc" + body
    reads = 0
    read = bmff._Reader.read

    def counted(self: bmff._Reader, size: int) -> int:
        nonlocal reads
        reads += 1
        return read(self, size)

    monkeypatch.setattr(bmff._Reader, "read", counted)
    bmff._heif_check_extents(data, (b"iloc", 8, len(data)))
    assert reads <= len(data), "every read consumes the table, or the table is skipped"
