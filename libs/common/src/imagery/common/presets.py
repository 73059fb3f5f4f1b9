"""Variant presets: the names DeliveryService accepts and the processor produces."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Preset:
    name: str
    max_width: int | None  # None: full size
    max_height: int | None
    crop: bool = False  # cover-crop to exactly max_width x max_height (centre)


DEFAULT_PRESETS: tuple[Preset, ...] = (
    Preset("thumbnail", 150, 150, crop=True),
    Preset("small", 400, 400),
    Preset("medium", 800, 800),
    Preset("large", 1600, 1600),
    Preset("original", None, None),
)
PRESET_NAMES: tuple[str, ...] = tuple(p.name for p in DEFAULT_PRESETS)

# Formats a variant can be encoded in, and which the delivery `format` preference picks.
WEBP, AVIF = "webp", "avif"
FALLBACK_FORMATS = ("jpeg", "png")
CONTENT_TYPES = {
    "webp": "image/webp",
    "avif": "image/avif",
    "jpeg": "image/jpeg",
    "png": "image/png",
}
VARIANT_CACHE_CONTROL = "public, max-age=31536000, immutable"
EXTENSIONS = {"webp": "webp", "avif": "avif", "jpeg": "jpg", "png": "png"}


def variant_key(sha256: str, name: str, fmt: str) -> str:
    return f"variants/{sha256}/{name}.{EXTENSIONS[fmt]}"
