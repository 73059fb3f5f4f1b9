"""Variant presets: the names DeliveryService accepts and the processor produces."""

from __future__ import annotations

from dataclasses import dataclass

from imagery.common.config import ConfigError

# What a preset's `formats` may name. "jpeg" is the widely supported fallback: JPEG, or PNG for
# an image with alpha.
PRESET_FORMATS = ("webp", "jpeg", "avif")
DEFAULT_FORMATS = ("webp", "jpeg")


@dataclass(frozen=True, slots=True)
class Preset:
    name: str
    max_width: int | None  # None: full size
    max_height: int | None
    crop: bool = False  # cover-crop to exactly max_width x max_height (centre)
    formats: tuple[str, ...] = DEFAULT_FORMATS
    quality: int | None = None  # the encoders' quality setting; None: their calibrated default
    max_bytes: int | None = None  # a byte budget per output, instead of a quality
    lazy: bool = False  # rendered on its first request instead of at ingest

    @property
    def full_size(self) -> bool:
        return self.max_width is None or self.max_height is None


DEFAULT_PRESETS: tuple[Preset, ...] = (
    Preset("thumbnail", 150, 150, crop=True),
    Preset("small", 400, 400),
    Preset("medium", 800, 800),
    # rendered on first request: the full-size outputs are most of ingest's encoding work and
    # few images are ever viewed that large
    Preset("large", 1600, 1600, lazy=True),
    Preset("original", None, None, lazy=True),
)
PRESET_NAMES: tuple[str, ...] = tuple(p.name for p in DEFAULT_PRESETS)
# VARIANT_PRESETS syntax: comma-separated `name:WxH` (fit inside), `name:WxH:crop` (cover-crop
# to exactly WxH, centre) or `name:full`, each optionally followed by `:lazy` (rendered on its
# first request instead of at ingest); never upscaled.
DEFAULT_PRESETS_SPEC = (
    "thumbnail:150x150:crop,small:400x400,medium:800x800,large:1600x1600:lazy,original:full:lazy"
)


def parse_presets(spec: str) -> tuple[Preset, ...]:
    presets = []
    for item in (part.strip() for part in spec.split(",") if part.strip()):
        name, _, rest = item.partition(":")
        lazy = rest.endswith(":lazy")
        rest = rest.removesuffix(":lazy")
        wrong = ConfigError(
            f"VARIANT_PRESETS entry {item!r} is not name:WxH[:crop][:lazy] or name:full[:lazy]."
        )
        if not name.isidentifier() or not rest:
            raise wrong
        if rest == "full":
            presets.append(Preset(name, None, None, lazy=lazy))
            continue
        size, _, crop = rest.partition(":")
        width, _, height = size.partition("x")
        if not (
            width.isdigit() and height.isdigit() and int(width) > 0 and int(height) > 0
        ) or crop not in ("", "crop"):
            raise wrong
        presets.append(Preset(name, int(width), int(height), crop == "crop", lazy=lazy))
    if len({p.name for p in presets}) != len(presets) or not presets:
        raise ConfigError("VARIANT_PRESETS must name at least one preset, each once.")
    if all(p.lazy for p in presets):
        raise ConfigError("VARIANT_PRESETS must render at least one preset at ingest (not :lazy).")
    return tuple(presets)
