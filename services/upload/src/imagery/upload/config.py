"""UploadService settings: the shared ones, with its default port, and how long a deleted
project is kept before it is purged."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from imagery.common.config import Env, Settings, load_service_settings
from imagery.common.presets import DEFAULT_PRESETS, DEFAULT_PRESETS_SPEC, Preset, parse_presets

DEFAULT_PORT = 50051


@dataclass(frozen=True, slots=True)
class UploadSettings:
    base: Settings
    project_retention_seconds: int
    presets: tuple[Preset, ...] = DEFAULT_PRESETS  # the default profile GetProject shows
    # The processor's MAX_IMAGE_PIXELS and MAX_IMAGE_FRAMES: an upload's own limits stay within.
    max_image_pixels: int = 40_000_000
    max_image_frames: int = 100


def _build(env: Env, base: Settings) -> UploadSettings:
    return UploadSettings(
        base=base,
        project_retention_seconds=env.integer("PROJECT_RETENTION_SECONDS", 30 * 86_400, minimum=0),
        presets=parse_presets(env.optional("VARIANT_PRESETS", DEFAULT_PRESETS_SPEC)),
        max_image_pixels=env.integer("MAX_IMAGE_PIXELS", 40_000_000, minimum=1),
        max_image_frames=env.integer("MAX_IMAGE_FRAMES", 100, minimum=1),
    )


def load_settings(environ: Mapping[str, str] | None = None) -> UploadSettings:
    return load_service_settings(environ, _build, default_port=DEFAULT_PORT)
