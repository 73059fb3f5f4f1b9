"""The image formats imagery knows: each one's name, MIME type, file extension and Pillow
format id, whether clients may upload it, whether only projects that turn it on accept it,
and whether variants may be encoded in it."""

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
    # accepted only by a project whose settings name it: never in the deployment's defaults
    opt_in: bool = False


FORMATS: MappingProxyType[str, ImageFormat] = MappingProxyType(
    {
        f.name: f
        for f in (
            ImageFormat("jpeg", "image/jpeg", "jpg", "JPEG", accepted=True, variant=True),
            ImageFormat("png", "image/png", "png", "PNG", accepted=True, variant=True),
            ImageFormat("webp", "image/webp", "webp", "WEBP", accepted=True, variant=True),
            ImageFormat("avif", "image/avif", "avif", "AVIF", accepted=True, variant=True),
            ImageFormat("gif", "image/gif", "gif", "GIF", accepted=True, variant=False),
            # HEIF with HEVC-coded images (iPhone photos), and any other HEIF (brand mif1/msf1)
            ImageFormat(
                "heic", "image/heic", "heic", "HEIF", accepted=True, variant=False, opt_in=True
            ),
            ImageFormat(
                "heif", "image/heif", "heif", "HEIF", accepted=True, variant=False, opt_in=True
            ),
        )
    }
)

# content type a client declares -> format name; exact match only. The deployment's ceiling:
# a project accepts DEFAULT_CONTENT_TYPES unless its settings choose others from these.
ALLOWED_CONTENT_TYPES: MappingProxyType[str, str] = MappingProxyType(
    {f.content_type: f.name for f in FORMATS.values() if f.accepted}
)
DEFAULT_CONTENT_TYPES: tuple[str, ...] = tuple(
    f.content_type for f in FORMATS.values() if f.accepted and not f.opt_in
)
# image/heif names the container family: it also covers HEVC-coded (heic) bytes.
_ALSO_DECLARED_AS = MappingProxyType({"heic": ("image/heif",)})

# Variant encodings, and the ones a delivery format preference accepts (best first).
WEBP, AVIF = "webp", "avif"
FALLBACK_FORMATS = ("jpeg", "png")


def content_type_of(fmt: str) -> str:
    return FORMATS[fmt].content_type


def declares(content_type: str, fmt: str) -> bool:
    """Whether bytes detected as `fmt` match a declared `content_type`."""
    known = FORMATS.get(fmt)
    if known is None or not known.accepted:
        return False
    return content_type == known.content_type or content_type in _ALSO_DECLARED_AS.get(fmt, ())
