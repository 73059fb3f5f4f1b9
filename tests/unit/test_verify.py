"""Verification against real files, hostile ones included (pure function: no I/O)."""

from __future__ import annotations

import pytest

from imagery.common.upload_events import parse_message
from imagery.processor.adapters.verify import sniff, verify
from imagery.processor.imaging import Limits, Rejected
from tests import images

LIMITS = Limits()


@pytest.mark.parametrize(
    ("data", "content_type", "fmt", "size"),
    [
        (images.jpeg(64, 48), "image/jpeg", "jpeg", (64, 48)),
        (images.png(30, 20, alpha=True), "image/png", "png", (30, 20)),
        (images.webp(10, 12), "image/webp", "webp", (10, 12)),
        (images.gif(5), "image/gif", "gif", (16, 16)),
        (images.avif(32, 24), "image/avif", "avif", (32, 24)),
    ],
)
def test_every_allowlisted_format_verifies(
    data: bytes, content_type: str, fmt: str, size: tuple[int, int]
) -> None:
    result = verify(data, content_type, LIMITS)
    assert (result.format, (result.width, result.height), result.size_bytes) == (
        fmt,
        size,
        len(data),
    )
    assert len(result.sha256) == 64


def test_dimensions_are_as_displayed_after_exif_orientation() -> None:
    rotated = verify(images.jpeg(64, 48, orientation=6), "image/jpeg", LIMITS)
    assert (rotated.width, rotated.height) == (48, 64)
    upright = verify(images.jpeg(64, 48, orientation=1), "image/jpeg", LIMITS)
    assert (upright.width, upright.height) == (64, 48)


@pytest.mark.parametrize(
    ("data", "content_type", "reason"),
    [
        (b"", "image/jpeg", "EMPTY"),
        (images.random_bytes(), "image/jpeg", "UNSUPPORTED_FORMAT"),
        (images.html(), "image/jpeg", "UNSUPPORTED_FORMAT"),
        (images.tiff(), "image/jpeg", "UNSUPPORTED_FORMAT"),
        (images.bmp(), "image/jpeg", "UNSUPPORTED_FORMAT"),
        (images.psd(), "image/jpeg", "UNSUPPORTED_FORMAT"),
        (images.png(), "image/jpeg", "CONTENT_TYPE_MISMATCH"),
        (images.jpeg(), "image/gif", "CONTENT_TYPE_MISMATCH"),
        (images.truncated_jpeg(), "image/jpeg", "CORRUPT"),
        (images.pixel_flood_png(), "image/png", "DIMENSIONS_EXCEEDED"),
        (images.pixel_flood_png(10_001, 10), "image/png", "DIMENSIONS_EXCEEDED"),
        (images.pixel_flood_png(9_000, 9_000), "image/png", "DIMENSIONS_EXCEEDED"),
        (images.gif(3000, (1, 1)), "image/gif", "DIMENSIONS_EXCEEDED"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "image/png", "CORRUPT"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 40, "image/jpeg", "CORRUPT"),
    ],
)
def test_hostile_and_broken_files_are_rejected_with_their_reason(
    data: bytes, content_type: str, reason: str
) -> None:
    with pytest.raises(Rejected) as caught:
        verify(data, content_type, LIMITS)
    assert caught.value.reason == reason


def test_a_truncated_jpeg_passes_the_header_check_but_not_the_decode() -> None:
    import io

    from PIL import Image

    with Image.open(io.BytesIO(images.truncated_jpeg())) as image:
        image.verify()  # only headers: passes, which is why we decode fully
    with pytest.raises(Rejected, match="CORRUPT"):
        verify(images.truncated_jpeg(), "image/jpeg", LIMITS)


def test_frame_limit_is_configurable() -> None:
    with pytest.raises(Rejected, match="DIMENSIONS_EXCEEDED"):
        verify(images.gif(5), "image/gif", Limits(max_frames=4))
    assert verify(images.gif(5), "image/gif", Limits(max_frames=5)).frames == 5


@pytest.mark.parametrize(
    ("data", "fmt"),
    [
        (b"\xff\xd8\xff\xdb", "jpeg"),
        (b"GIF89a", "gif"),
        (b"GIF87a", "gif"),
        (b"RIFF\0\0\0\0WEBPVP8 ", "webp"),
        (b"\0\0\0\x1cftypavif\0\0\0\0avifmif1", "avif"),
        (b"\0\0\0\x18ftypmif1\0\0\0\0avifmiaf", "avif"),
        (b"\0\0\0\x18ftypheic\0\0\0\0heicmif1", "heic"),
        (b"%PDF-1.7", None),
        (b"II*\0", None),
        (b"BM", None),
    ],
)
def test_magic_bytes(data: bytes, fmt: str | None) -> None:
    assert sniff(data) == fmt


BUCKET = "imagery-test"


def _event(key: str, bucket: str = BUCKET, name: str = "ObjectCreated:Put") -> str:
    import json

    return json.dumps(
        {
            "Records": [
                {"eventName": name, "s3": {"bucket": {"name": bucket}, "object": {"key": key}}}
            ]
        }
    )


def test_event_parsing() -> None:
    parsed = parse_message(_event("uploads%2F01ARZ3NDEKTSV4RRFFQ69G5FAV"), BUCKET)
    assert [(u.image_id, u.key) for u in parsed.uploads] == [
        ("01ARZ3NDEKTSV4RRFFQ69G5FAV", "uploads/01ARZ3NDEKTSV4RRFFQ69G5FAV")
    ]
    assert parse_message('{"Service":"Amazon S3","Event":"s3:TestEvent"}', BUCKET).test_event
    for body in (
        "not json",
        "[1]",
        '{"x": 1}',
        _event("originals/abc"),
        _event("uploads/../../etc"),
        _event("uploads/01ARZ3NDEKTSV4RRFFQ69G5FAV", bucket="other"),
        _event("uploads/01ARZ3NDEKTSV4RRFFQ69G5FAV", name="ObjectRemoved:Delete"),
        _event("uploads/81ARZ3NDEKTSV4RRFFQ69G5FAV"),
        '{"Records": [{"eventName": 1}]}',
    ):
        parsed = parse_message(body, BUCKET)
        assert parsed.uploads == [] and not parsed.test_event and parsed.ignored, body


def test_an_animation_over_budget_is_refused_before_pillow_opens_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from PIL import Image

    def no_decoding(*_: object, **__: object) -> None:
        raise AssertionError("Pillow opened the file")

    monkeypatch.setattr(Image, "open", no_decoding)
    with pytest.raises(Rejected) as caught:
        verify(images.sparse_gif(), "image/gif", Limits())
    assert caught.value.reason == "DIMENSIONS_EXCEEDED"
    assert "26 frames of 4000x4000" in caught.value.detail


def test_a_jpeg_of_thousands_of_scans_is_refused_before_decoding() -> None:
    data = images.jpeg(64, 48)
    scan = data.index(b"\xff\xda")
    flooded = data[:scan] + data[scan:-2] * 150 + b"\xff\xd9"
    with pytest.raises(Rejected) as caught:
        verify(flooded, "image/jpeg", Limits())
    assert caught.value.reason == "DIMENSIONS_EXCEEDED"
    assert "JPEG scans" in caught.value.detail
    assert verify(images.jpeg(64, 48), "image/jpeg", Limits()).format == "jpeg"
