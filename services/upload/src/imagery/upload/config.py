"""UploadService settings: the shared ones, with its default port, and how long a deleted
project is kept before it is purged."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from imagery.common.config import Env, Settings, load_service_settings

DEFAULT_PORT = 50051


@dataclass(frozen=True, slots=True)
class UploadSettings:
    base: Settings
    project_retention_seconds: int


def _build(env: Env, base: Settings) -> UploadSettings:
    return UploadSettings(
        base=base,
        project_retention_seconds=env.integer("PROJECT_RETENTION_SECONDS", 30 * 86_400, minimum=0),
    )


def load_settings(environ: Mapping[str, str] | None = None) -> UploadSettings:
    return load_service_settings(environ, _build, default_port=DEFAULT_PORT)
