"""UploadService settings: the shared ones, with its default port."""

from __future__ import annotations

from collections.abc import Mapping

from imagery.common.config import Settings

DEFAULT_PORT = 50051


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    return Settings.from_env(environ, default_port=DEFAULT_PORT)
