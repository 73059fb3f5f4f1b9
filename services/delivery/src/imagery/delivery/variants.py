"""Which stored variant answers a request for (preset name, format preference)."""

from __future__ import annotations

from imagery.common.domain import ImageRecord, VariantInfo
from imagery.common.formats import AVIF, FALLBACK_FORMATS, WEBP

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
