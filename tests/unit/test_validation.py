from __future__ import annotations

import pytest

from imagery.common.errors import ImageryError
from imagery.upload.validation import validate_content_type, validate_file_name

ACCEPTED = ["image/jpeg", "image/png", "image/webp", "image/avif", "image/gif"]
REJECTED = [
    "image/*",
    "image/jpeg;text/html",
    "image/jpeg; charset=binary",
    "IMAGE/JPEG",
    "Image/Png",
    "image/svg+xml",
    "image/tiff",
    "image/bmp",
    "text/html",
    "",
    " image/jpeg",
    "image/jpeg ",
    "image/jpg",
    "*/*",
]


@pytest.mark.parametrize("content_type", ACCEPTED)
def test_allowlisted_content_types_are_accepted(content_type: str) -> None:
    assert validate_content_type(content_type) == content_type


@pytest.mark.parametrize("content_type", REJECTED)
def test_anything_but_an_exact_allowlisted_type_is_rejected(content_type: str) -> None:
    with pytest.raises(ImageryError) as caught:
        validate_content_type(content_type)
    assert caught.value.reason == "UNSUPPORTED_CONTENT_TYPE"
    assert [v.field for v in caught.value.violations] == ["content_type"]
    assert "image/jpeg, image/png, image/webp, image/avif, image/gif" in caught.value.message


@pytest.mark.parametrize(
    "file_name",
    [
        "cat.png",
        "a",
        "x" * 255,
        "🐱" * 255,
        "Ferienfoto Überlingen 2026.jpg",
        "../../etc/passwd",
        "名前.webp",
    ],
)
def test_displayable_file_names_are_accepted(file_name: str) -> None:
    assert validate_file_name(file_name) == file_name


@pytest.mark.parametrize(
    ("file_name", "problem"),
    [
        ("", "is empty"),
        ("   ", "is empty"),
        ("x" * 256, "256 characters"),
        ("🐱" * 256, "256 characters"),
        ("cat\x00.png", "U+0000"),
        ("cat\n.png", "U+000A"),
        ("cat\r.png", "U+000D"),
        ("cat\t.png", "U+0009"),
        ("\x1b[31mred.png", "U+001B"),
        ("cat\x7f.png", "U+007F"),
        ("cat\x85.png", "U+0085"),
        ("cat\u2028.png", "U+2028"),
    ],
)
def test_empty_long_or_control_character_names_are_rejected(file_name: str, problem: str) -> None:
    with pytest.raises(ImageryError) as caught:
        validate_file_name(file_name)
    assert caught.value.reason == "INVALID_FILE_NAME"
    assert caught.value.violations[0].field == "file_name"
    assert problem in caught.value.violations[0].description
