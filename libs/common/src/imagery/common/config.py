"""Settings read once at start-up from the environment (the README lists every variable).

A missing or malformed value raises `ConfigError` naming the variable, so a
misconfigured pod fails at start with a message an operator can act on.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

S3_MAX_PRESIGN_SECONDS = 7 * 24 * 3600  # SigV4 presigned URLs live at most 7 days
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("json", "text")


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


class Env:
    """Typed reads from an environment mapping, each failing with the variable's name."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def raw(self, name: str) -> str | None:
        value = self._environ.get(name)
        return value.strip() if value is not None and value.strip() else None

    def required(self, name: str, hint: str = "") -> str:
        value = self.raw(name)
        if value is None:
            raise ConfigError(f"{name} is not set: {hint or 'set it in the environment'}.")
        return value

    def optional(self, name: str, default: str) -> str:
        value = self.raw(name)
        return default if value is None else value

    def integer(
        self, name: str, default: int, *, minimum: int = 0, maximum: int | None = None
    ) -> int:
        value = self.raw(name)
        if value is None:
            return default
        return _parse(name, value, int, f"a whole number >= {minimum}", minimum, maximum)

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.optional(name, default).lower()
        if value not in choices:
            raise ConfigError(f"{name}={value!r} is not one of {', '.join(choices)}.")
        return value


def _parse(
    name: str,
    value: str,
    convert: Callable[[str], int],
    expected: str,
    minimum: int,
    maximum: int | None,
) -> int:
    try:
        number = convert(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not {expected}.") from None
    if number < minimum or (maximum is not None and number > maximum):
        bound = f" and <= {maximum}" if maximum is not None else ""
        raise ConfigError(f"{name}={value!r} must be >= {minimum}{bound}.")
    return number


@dataclass(frozen=True, slots=True)
class AwsSettings:
    region: str
    endpoint_url: str | None
    bucket: str

    @classmethod
    def from_env(cls, env: Env) -> AwsSettings:
        return cls(
            region=env.required("AWS_REGION", "the AWS region of the bucket and queues"),
            endpoint_url=env.raw("AWS_ENDPOINT_URL"),
            bucket=env.required("S3_BUCKET", "the bucket that holds uploads and variants"),
        )


@dataclass(frozen=True, slots=True)
class Settings:
    """What every imagery process shares; services add their own on top."""

    database_url: str
    aws: AwsSettings
    grpc_port: int
    log_level: str
    log_format: str
    max_upload_bytes: int
    upload_url_expiry_seconds: int
    metrics_port: int | None = None

    @property
    def base(self) -> Settings:
        """Services with more settings expose the shared ones as `.base`; this is them."""
        return self

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        default_port: int = 50051,
        port_variable: str = "GRPC_PORT",
    ) -> Settings:
        """`port_variable` names the port setting; GRPC_PORT is read when it is not set."""
        env = Env(os.environ if environ is None else environ)
        port_name = port_variable if env.raw(port_variable) is not None else "GRPC_PORT"
        return cls(
            database_url=env.required("DATABASE_URL", "e.g. postgresql://user@host:5432/imagery"),
            aws=AwsSettings.from_env(env),
            grpc_port=env.integer(port_name, default_port, minimum=0, maximum=65535),
            log_level=env.choice("LOG_LEVEL", "info", LOG_LEVELS),
            log_format=env.choice("LOG_FORMAT", "json", LOG_FORMATS),
            max_upload_bytes=env.integer("MAX_UPLOAD_BYTES", 10 * 1024 * 1024, minimum=1),
            metrics_port=env.integer("METRICS_PORT", 0, minimum=0, maximum=65535) or None,
            upload_url_expiry_seconds=min(
                env.integer("UPLOAD_URL_EXPIRY_SECONDS", 300, minimum=1), S3_MAX_PRESIGN_SECONDS
            ),
        )


def load_service_settings(
    environ: Mapping[str, str] | None,
    build: Callable[[Env, Settings], T],
    *,
    default_port: int,
    port_variable: str = "GRPC_PORT",
) -> T:
    """A service's settings: the shared ones, then `build` adds its own from the same source."""
    source = os.environ if environ is None else environ
    base = Settings.from_env(source, default_port=default_port, port_variable=port_variable)
    return build(Env(source), base)
