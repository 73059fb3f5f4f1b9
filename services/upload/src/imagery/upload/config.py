"""UploadService settings: the shared ones, with its default port."""

from __future__ import annotations

from collections.abc import Mapping

from imagery.common.config import Env, Settings, load_service_settings

DEFAULT_PORT = 50051


def _build(_: Env, base: Settings) -> Settings:
    return base


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    return load_service_settings(environ, _build, default_port=DEFAULT_PORT)
