"""Settings read once at start-up from the environment (the README lists every variable).

A missing or malformed value raises `ConfigError` naming the variable, so a
misconfigured pod fails at start with a message an operator can act on.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from imagery.common.formats import ALLOWED_CONTENT_TYPES, DEFAULT_CONTENT_TYPES
from imagery.common.tenancy import RPC_CLASSES, EffectiveSettings, SettingsPolicy

T = TypeVar("T")

S3_MAX_PRESIGN_SECONDS = 7 * 24 * 3600  # SigV4 presigned URLs live at most 7 days
SIGNED_URL_CEILING_SECONDS = 7 * 24 * 3600  # for links that must outlive a page view (e-mail)
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
    projects: SettingsPolicy | None = None  # None only in tests that build Settings by hand
    grpc_reflection: bool = True
    forwarded_identity_header: str | None = None  # trusted only when configured
    tls_cert_file: str | None = None  # None: plaintext (the local stack)
    tls_key_file: str | None = None
    tls_client_ca_file: str | None = None  # set: clients must present a certificate it signed
    grpc_health_port: int | None = None  # plaintext, health only: for probes when TLS is on
    grpc_max_concurrent_rpcs: int = 200
    grpc_max_connection_age_ms: int = 300_000
    grpc_max_connection_age_grace_ms: int = 30_000
    database_acquire_timeout_ms: int = 2_000
    # How long a starting service waits for the migrations it needs (`db.schema`).
    schema_wait_seconds: int = 600
    redis_url: str | None = None  # rate-limit counters shared by replicas; None: per process

    @property
    def project_policy(self) -> SettingsPolicy:
        return self.projects or project_policy_from_env(Env({}))

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
        tls_cert_file, tls_key_file, tls_client_ca_file = _tls_files(env)
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
            projects=project_policy_from_env(env),
            grpc_reflection=env.choice("GRPC_REFLECTION", "on", ("on", "off")) == "on",
            forwarded_identity_header=(env.raw("MTLS_FORWARDED_IDENTITY_HEADER") or "").lower()
            or None,
            tls_cert_file=tls_cert_file,
            tls_key_file=tls_key_file,
            tls_client_ca_file=tls_client_ca_file,
            grpc_health_port=env.integer("GRPC_HEALTH_PORT", 0, minimum=0, maximum=65535) or None,
            grpc_max_concurrent_rpcs=env.integer("GRPC_MAX_CONCURRENT_RPCS", 200, minimum=1),
            grpc_max_connection_age_ms=env.integer(
                "GRPC_MAX_CONNECTION_AGE_MS", 300_000, minimum=1_000
            ),
            grpc_max_connection_age_grace_ms=env.integer(
                "GRPC_MAX_CONNECTION_AGE_GRACE_MS", 30_000, minimum=0
            ),
            database_acquire_timeout_ms=env.integer(
                "DATABASE_ACQUIRE_TIMEOUT_MS", 2_000, minimum=1
            ),
            schema_wait_seconds=env.integer("SCHEMA_WAIT_SECONDS", 600, minimum=0),
            redis_url=env.raw("REDIS_URL"),
        )


def _tls_files(env: Env) -> tuple[str | None, str | None, str | None]:
    """TLS_CERT_FILE and TLS_KEY_FILE come together; every file named must be readable now
    (its contents are checked, and followed for rotation, by `imagery.common.grpc.tls`)."""
    cert, key = env.raw("TLS_CERT_FILE"), env.raw("TLS_KEY_FILE")
    client_ca = env.raw("TLS_CLIENT_CA_FILE")
    if cert is not None and key is None:
        raise ConfigError("TLS_KEY_FILE is not set: TLS_CERT_FILE needs its private key.")
    if key is not None and cert is None:
        raise ConfigError("TLS_CERT_FILE is not set: TLS_KEY_FILE needs its certificate.")
    if client_ca is not None and cert is None:
        raise ConfigError(
            "TLS_CERT_FILE is not set: TLS_CLIENT_CA_FILE (mTLS) needs the server's "
            "certificate and key too."
        )
    for name, path in (
        ("TLS_CERT_FILE", cert),
        ("TLS_KEY_FILE", key),
        ("TLS_CLIENT_CA_FILE", client_ca),
    ):
        if path is not None:
            try:
                with open(path, "rb"):
                    pass
            except OSError as exc:
                raise ConfigError(f"{name}={path!r} cannot be read ({exc.strerror}).") from None
    return cert, key, client_ca


def project_policy_from_env(env: Env) -> SettingsPolicy:
    """Every project setting's default and ceiling. The defaults are the deployment-wide
    settings that existed before projects; a project may choose up to the ceiling."""
    max_side = env.integer("MAX_IMAGE_SIDE", 10_000, minimum=1)
    max_bytes = env.integer("MAX_UPLOAD_BYTES", 10 * 1024 * 1024, minimum=1)
    bytes_ceiling = env.integer(
        "MAX_UPLOAD_BYTES_CEILING", max(max_bytes, 50 * 1024 * 1024), minimum=max_bytes
    )
    url_ceiling = env.integer(
        "SIGNED_URL_EXPIRY_CEILING_SECONDS",
        SIGNED_URL_CEILING_SECONDS,
        minimum=1,
        maximum=SIGNED_URL_CEILING_SECONDS,
    )
    url_default = env.integer("SIGNED_URL_EXPIRY_SECONDS", 600, minimum=1, maximum=url_ceiling)
    quotas = {
        name: (
            env.integer(f"PROJECT_{name.upper()}_DEFAULT", 0, minimum=0),
            env.integer(f"PROJECT_{name.upper()}_CEILING", 0, minimum=0),
        )
        for name in (
            "quota_images",
            "quota_bytes",
            "quota_uploads_per_day",
            *(f"rate_{rpc}_per_minute" for rpc in RPC_CLASSES),
        )
    }
    declared = env.choice("PROJECT_REQUIRE_DECLARED_UPLOAD_DEFAULT", "false", ("false", "true"))
    return SettingsPolicy(
        defaults=EffectiveSettings(
            content_types=DEFAULT_CONTENT_TYPES,  # opt-in formats (HEIC) only when chosen
            max_upload_bytes=max_bytes,
            min_width=0,
            min_height=0,
            max_width=max_side,
            max_height=max_side,
            signed_url_ttl_seconds=url_default,
            require_declared_upload=declared == "true",
            **{name: default for name, (default, _) in quotas.items()},
        ),
        ceilings=EffectiveSettings(
            content_types=tuple(ALLOWED_CONTENT_TYPES),
            max_upload_bytes=bytes_ceiling,
            min_width=max_side,
            min_height=max_side,
            max_width=max_side,
            max_height=max_side,
            signed_url_ttl_seconds=url_ceiling,
            require_declared_upload=True,
            **{name: ceiling for name, (_, ceiling) in quotas.items()},
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
