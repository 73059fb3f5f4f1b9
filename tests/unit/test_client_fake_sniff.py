"""The fake's "processor" reads what imagery's would from a file's header: the format and the
displayed dimensions of every accepted format (files made by Pillow here), and imagery's
failure reason for what imagery refuses without decoding."""

from __future__ import annotations

import pytest

from imagery.client.testing._sniff import Rejected, sniff
from tests import images


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (images.png(64, 48), "image/png", ("png", 64, 48, False)),
        (images.png(30, 20, alpha=True), "image/png", ("png", 30, 20, True)),
        (images.jpeg(320, 240), "image/jpeg", ("jpeg", 320, 240, False)),
        (images.webp(64, 48), "image/webp", ("webp", 64, 48, False)),
        (images.gif(3, (16, 12)), "image/gif", ("gif", 16, 12, False)),
        (images.avif(32, 24), "image/avif", ("avif", 32, 24, False)),
    ],
)
def test_format_and_dimensions_come_from_the_header(
    body: bytes, content_type: str, expected: tuple[str, int, int, bool]
) -> None:
    assert tuple(sniff(body, content_type)) == expected


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        (b"", "image/png", "EMPTY"),
        (images.html(), "image/png", "UNSUPPORTED_FORMAT"),
        (images.tiff(), "image/jpeg", "UNSUPPORTED_FORMAT"),
        (images.png(), "image/jpeg", "CONTENT_TYPE_MISMATCH"),
        (images.png()[:20], "image/png", "CORRUPT"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "image/jpeg", "CORRUPT"),
    ],
)
def test_refused_bytes_get_imagerys_reason(body: bytes, content_type: str, reason: str) -> None:
    with pytest.raises(Rejected) as rejected:
        sniff(body, content_type)
    assert rejected.value.reason == reason
