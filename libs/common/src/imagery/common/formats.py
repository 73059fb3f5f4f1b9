"""The image formats imagery knows: each one's name, MIME type, file extension and Pillow
format id, and whether clients may upload it and variants may be encoded in it."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True, slots=True)
class ImageFormat:
    name: str  # what records and variants store: jpeg, png, ...
    content_type: str
    extension: str
    pillow: str  # Pillow's format id
    accepted: bool  # a client may declare it in CreateUploadUrl
    variant: bool  # variants may be encoded in it


FORMATS: MappingProxyType[str, ImageFormat] = MappingProxyType(
    {
        f.name: f
        for f in (
            ImageFormat("jpeg", "image/jpeg", "jpg", "JPEG", accepted=True, variant=True),
            ImageFormat("png", "image/png", "png", "PNG", accepted=True, variant=True),
            ImageFormat("webp", "image/webp", "webp", "WEBP", accepted=True, variant=True),
            ImageFormat("avif", "image/avif", "avif", "AVIF", accepted=True, variant=True),
            ImageFormat("gif", "image/gif", "gif", "GIF", accepted=True, variant=False),
        )
    }
)

# content type a client declares -> format name; exact match only
ALLOWED_CONTENT_TYPES: MappingProxyType[str, str] = MappingProxyType(
    {f.content_type: f.name for f in FORMATS.values() if f.accepted}
)

# Variant encodings, and the ones a delivery format preference accepts (best first).
WEBP, AVIF = "webp", "avif"
FALLBACK_FORMATS = ("jpeg", "png")


def content_type_of(fmt: str) -> str:
    return FORMATS[fmt].content_type
