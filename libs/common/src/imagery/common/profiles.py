"""Variant profiles: the renditions a project wants of each image.

A profile is a versioned list of presets. Version 0 is the deployment's default
(`VARIANT_PRESETS`); each change a project makes is a new version, never an edit of an old one,
because object keys carry the version (`storage_keys.variant_key`) and an `immutable` key must
never get new bytes. An image keeps serving the variants of the version it was rendered with
until a backfill renders the current one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from imagery.common.errors import InvalidArgument
from imagery.common.presets import DEFAULT_FORMATS, PRESET_FORMATS, Preset

DEFAULT_VERSION = 0
LAZY_POLICIES = ("fallback", "pending")
MAX_PRESETS = 16
MAX_SIDE = 10_000
MIN_BUDGET_BYTES = 1_024
MAX_BUDGET_BYTES = 50 * 1024 * 1024
DEFAULT_BLURHASH_COMPONENTS = (4, 3)  # across, down
MAX_BLURHASH_COMPONENTS = 9  # the BlurHash format's limit per axis
_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")


@dataclass(frozen=True, slots=True)
class VariantProfile:
    version: int
    presets: tuple[Preset, ...]
    # What a URL request for a preset not yet rendered for an image answers: the nearest
    # rendered variant, marked as a fallback, or VARIANT_PENDING; either way it is rendered.
    lazy_policy: str = "fallback"
    created_at: datetime | None = None
    # The BlurHash components of its images' placeholders (across, down), 1-9 each.
    blurhash_components: tuple[int, int] = DEFAULT_BLURHASH_COMPONENTS

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.presets)

    def preset(self, name: str) -> Preset | None:
        return next((p for p in self.presets if p.name == name), None)

    @property
    def at_ingest(self) -> tuple[Preset, ...]:
        """The presets rendered when an upload is processed (the rest on first request)."""
        return tuple(p for p in self.presets if not p.lazy)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "lazy_policy": self.lazy_policy,
            "presets": [_preset_to_json(p) for p in self.presets],
            **({"created_at": self.created_at.isoformat()} if self.created_at else {}),
            **(
                {"blurhash_components": list(self.blurhash_components)}
                if self.blurhash_components != DEFAULT_BLURHASH_COMPONENTS
                else {}
            ),
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> VariantProfile:
        created = raw.get("created_at")
        across, down = raw.get("blurhash_components") or DEFAULT_BLURHASH_COMPONENTS
        return cls(
            int(raw["version"]),
            tuple(_preset_from_json(p) for p in raw["presets"]),
            str(raw.get("lazy_policy", "fallback")),
            datetime.fromisoformat(created) if created else None,
            (int(across), int(down)),
        )


def profile_from_json(raw: Any) -> VariantProfile | None:
    """A `variant_profile` column as stored (jsonb text or decoded; NULL: the default)."""
    if raw is None:
        return None
    return VariantProfile.from_json(json.loads(raw) if isinstance(raw, str) else raw)


def default_profile(presets: Sequence[Preset]) -> VariantProfile:
    """Version 0: the deployment's presets (`VARIANT_PRESETS`)."""
    return VariantProfile(DEFAULT_VERSION, tuple(presets))


def _preset_to_json(preset: Preset) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": preset.name,
        "width": preset.max_width or 0,
        "height": preset.max_height or 0,
        "fit": "cover" if preset.crop else "inside",
        "formats": list(preset.formats),
    }
    if preset.quality is not None:
        out["quality"] = preset.quality
    if preset.max_bytes is not None:
        out["max_bytes"] = preset.max_bytes
    if preset.lazy:
        out["lazy"] = True
    return out


def _preset_from_json(raw: Mapping[str, Any]) -> Preset:
    width, height = int(raw.get("width") or 0), int(raw.get("height") or 0)
    return Preset(
        str(raw["name"]),
        width or None,
        height or None,
        crop=raw.get("fit") == "cover",
        formats=tuple(raw.get("formats") or DEFAULT_FORMATS),
        quality=raw.get("quality"),
        max_bytes=raw.get("max_bytes"),
        lazy=bool(raw.get("lazy", False)),
    )


def validate_profile(
    presets: Sequence[Preset],
    lazy_policy: str,
    field: str = "variant_profile",
    blurhash_components: tuple[int, int] = DEFAULT_BLURHASH_COMPONENTS,
) -> VariantProfile:
    """The profile a caller asked for (version still 0), or InvalidArgument naming the first
    field that is wrong and what to send instead."""
    if not presets:
        raise InvalidArgument(f"{field}.presets", "is empty", "send at least one preset")
    if len(presets) > MAX_PRESETS:
        raise InvalidArgument(
            f"{field}.presets", f"has {len(presets)} presets", f"send at most {MAX_PRESETS}"
        )
    seen: set[str] = set()
    checked = []
    for index, preset in enumerate(presets):
        where = f"{field}.presets[{index}]"
        checked.append(_validate_preset(preset, where))
        if preset.name in seen:
            raise InvalidArgument(f"{where}.name", "repeats a name", "name each preset once")
        seen.add(preset.name)
    if all(p.lazy for p in checked):  # an image with no variant at all reads as content lost
        raise InvalidArgument(
            f"{field}.presets", "are all lazy", "render at least one preset at ingest"
        )
    if lazy_policy not in LAZY_POLICIES:
        raise InvalidArgument(
            f"{field}.lazy_policy", f"is {lazy_policy!r}", "send FALLBACK or PENDING"
        )
    for axis, count in zip("xy", blurhash_components, strict=True):
        if not 1 <= count <= MAX_BLURHASH_COMPONENTS:
            raise InvalidArgument(
                f"{field}.blurhash_components.{axis}",
                f"is {count}",
                f"send 1-{MAX_BLURHASH_COMPONENTS}",
            )
    return VariantProfile(
        DEFAULT_VERSION, tuple(checked), lazy_policy, blurhash_components=blurhash_components
    )


def _validate_preset(preset: Preset, where: str) -> Preset:
    if not _NAME.fullmatch(preset.name):
        raise InvalidArgument(
            f"{where}.name",
            f"is {preset.name[:40]!r}",
            "use 1-32 lower-case letters, digits, '_' or '-', starting with a letter",
        )
    width, height = preset.max_width or 0, preset.max_height or 0
    if (width == 0) != (height == 0) or not (0 <= width <= MAX_SIDE and 0 <= height <= MAX_SIDE):
        raise InvalidArgument(
            f"{where}.width",
            f"and height are {width}x{height}",
            f"send both 1-{MAX_SIDE}, or both 0 for the full size",
        )
    if preset.crop and width == 0:
        raise InvalidArgument(f"{where}.fit", "is COVER without a box", "send width and height")
    formats = tuple(dict.fromkeys(preset.formats)) or DEFAULT_FORMATS
    unknown = [f for f in formats if f not in PRESET_FORMATS]
    if unknown or len(formats) != len(preset.formats or DEFAULT_FORMATS):
        raise InvalidArgument(
            f"{where}.formats",
            f"names {(unknown or ['a format twice'])[0][:20]!r}",
            f"send each of {', '.join(PRESET_FORMATS)} at most once",
        )
    if preset.quality is not None and preset.max_bytes is not None:
        raise InvalidArgument(f"{where}.quality", "is set with max_bytes", "send one of them")
    if preset.quality is not None and not 1 <= preset.quality <= 100:
        raise InvalidArgument(f"{where}.quality", f"is {preset.quality}", "send 1-100")
    if preset.max_bytes is not None and not (
        MIN_BUDGET_BYTES <= preset.max_bytes <= MAX_BUDGET_BYTES
    ):
        raise InvalidArgument(
            f"{where}.max_bytes",
            f"is {preset.max_bytes}",
            f"send {MIN_BUDGET_BYTES}-{MAX_BUDGET_BYTES} bytes",
        )
    return replace(preset, formats=formats, max_width=width or None, max_height=height or None)
