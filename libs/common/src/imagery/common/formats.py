"""The image formats imagery accepts, keyed by the exact content type a client declares."""

from __future__ import annotations

from types import MappingProxyType

# content type -> format name (also Pillow's format id lower-cased, except AVIF/JPEG naming)
ALLOWED_CONTENT_TYPES = MappingProxyType(
    {
        "image/jpeg": "jpeg",
        "image/png": "png",
        "image/webp": "webp",
        "image/avif": "avif",
        "image/gif": "gif",
    }
)
