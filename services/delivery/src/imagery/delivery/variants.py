"""Which stored variant answers a request for (preset name, format preference)."""

from __future__ import annotations

import math

from imagery.common.domain import ImageRecord, VariantInfo
from imagery.common.formats import AVIF, FALLBACK_FORMATS, WEBP
from imagery.common.presets import Preset

# format preference -> the encodings that satisfy it, best first
PREFERENCES: dict[str, tuple[str, ...]] = {
    "webp": (WEBP,),
    "fallback": FALLBACK_FORMATS,
    "avif": (AVIF,),
}


def pick_variant(record: ImageRecord, name: str, preference: str) -> VariantInfo | None:
    for fmt in PREFERENCES[preference]:
        for variant in record.variants:
            if variant.name == name and variant.format == fmt:
                return variant
    return None


def available(record: ImageRecord) -> str:
    names = dict.fromkeys(v.name for v in record.variants)
    return ", ".join(names) or "none"


def nearest_variant(record: ImageRecord, preset: Preset, preference: str) -> VariantInfo | None:
    """The rendered variant closest in size to what `preset` would make of the image, in the
    best format the preference accepts that any variant has: the stand-in while the preset is
    rendered. Closest by area on a log scale; between two as close, the larger."""
    width, height = record.width or 0, record.height or 0
    wanted = width * height
    if not preset.full_size and wanted:
        assert preset.max_width is not None and preset.max_height is not None
        if preset.crop:  # the box itself, unless the image is smaller
            wanted = min(wanted, preset.max_width * preset.max_height)
        else:
            scale = min(1.0, preset.max_width / width, preset.max_height / height)
            wanted = round(wanted * scale * scale)
    for fmt in PREFERENCES[preference]:
        candidates = [v for v in record.variants if v.format == fmt and v.name != preset.name]
        if candidates:
            return min(
                candidates,
                key=lambda v: (
                    abs(math.log(max(v.width * v.height, 1) / max(wanted, 1))),
                    -v.width,
                ),
            )
    return None
