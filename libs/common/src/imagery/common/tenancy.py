"""Projects, principals and scopes: who calls, for which project, allowed to do what.

A project's settings are what it chose; the environment gives every setting a default and a
ceiling (`SettingsPolicy`). What applies is `policy.effective(settings)`: the choice, else the
default, never above the ceiling (a ceiling lowered later wins over an older choice).
"""

from __future__ import annotations

import enum
import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from imagery.common.errors import InvalidArgument, SettingAboveCeiling
from imagery.common.formats import DEFAULT_CONTENT_TYPES

if TYPE_CHECKING:  # profiles -> presets -> config -> tenancy
    from imagery.common.profiles import VariantProfile

DEFAULT_PROJECT = "default"
OPERATOR_PROJECT = "operator"
PROJECT_ID_PATTERN = r"[a-z][a-z0-9-]{1,61}[a-z0-9]"
_PROJECT_ID_RE = re.compile(rf"^{PROJECT_ID_PATTERN}$")


class Scope(enum.StrEnum):
    IMAGES_CREATE = "images.create"
    IMAGES_READ = "images.read"
    IMAGES_DELETE = "images.delete"
    PROJECTS_ADMIN = "projects.admin"


ALL_SCOPES = tuple(Scope)
IMAGE_SCOPES = (Scope.IMAGES_CREATE, Scope.IMAGES_READ, Scope.IMAGES_DELETE)


def parse_scopes(
    values: list[str] | tuple[str, ...], field_name: str = "scopes"
) -> frozenset[Scope]:
    known = {s.value: s for s in Scope}
    names = ", ".join(known)
    if not values:
        raise InvalidArgument(field_name, "is empty", f"name at least one of {names}")
    unknown = [v for v in values if v not in known]
    if unknown:
        raise InvalidArgument(
            field_name, f"names an unknown scope {unknown[0][:50]!r}", f"use only {names}"
        )
    return frozenset(known[v] for v in values)


def require_project_id(value: str, field_name: str = "project_id") -> str:
    if _PROJECT_ID_RE.fullmatch(value):
        return value
    raise InvalidArgument(
        field_name,
        f"{value[:70]!r} is not a project id",
        "use 3-63 characters: lower-case letters, digits and hyphens, starting with a letter "
        "and not ending with a hyphen",
    )


def content_address(scope: str, sha256: str) -> str:
    """Where content lives, as a 64-hex address: the bytes' SHA-256 in the empty scope (the
    `default` project, and everything stored before projects), else a hash of the project's
    secret scope and the SHA-256. Identical bytes in two projects get unrelated addresses, so
    nothing (row, object, timing of a deduplicated upload) is shared across projects."""
    if not scope:
        return sha256
    return hashlib.sha256(f"{scope}:{sha256}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ProjectSettings:
    """What a project chose; None means "the deployment's default". Quotas (0 = unlimited)
    are kept here and enforced by admission control."""

    content_types: tuple[str, ...] | None = None
    max_upload_bytes: int | None = None
    min_width: int | None = None
    min_height: int | None = None
    max_width: int | None = None
    max_height: int | None = None
    signed_url_ttl_seconds: int | None = None
    quota_images: int | None = None
    quota_bytes: int | None = None
    quota_uploads_per_day: int | None = None
    rate_create_per_minute: int | None = None
    rate_read_per_minute: int | None = None
    rate_delete_per_minute: int | None = None
    rate_admin_per_minute: int | None = None
    require_declared_upload: bool | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            f.name: list(v) if isinstance(v, tuple) else v
            for f in fields(self)
            if (v := getattr(self, f.name)) is not None
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> ProjectSettings:
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in raw.items() if k in names}
        if "content_types" in values and values["content_types"] is not None:
            values["content_types"] = tuple(values["content_types"])
        return cls(**values)

    def merged(self, other: ProjectSettings, paths: tuple[str, ...]) -> ProjectSettings:
        """These settings with `paths` taken from `other` (an update mask's fields)."""
        return replace(self, **{p: getattr(other, p) for p in paths})


SETTING_NAMES = tuple(f.name for f in fields(ProjectSettings))
# Settings that cap what a project may use: 0 means unlimited, and only operators change them.
LIMITS = ("quota_", "rate_")
RPC_CLASSES = ("create", "read", "delete", "admin")
# On/off settings: no ceiling, any project may choose either.
SWITCHES = frozenset({"require_declared_upload"})


@dataclass(frozen=True, slots=True)
class EffectiveSettings:
    content_types: tuple[str, ...]
    max_upload_bytes: int
    min_width: int
    min_height: int
    max_width: int
    max_height: int
    signed_url_ttl_seconds: int
    quota_images: int
    quota_bytes: int
    quota_uploads_per_day: int
    rate_create_per_minute: int
    rate_read_per_minute: int
    rate_delete_per_minute: int
    rate_admin_per_minute: int
    require_declared_upload: bool


@dataclass(frozen=True, slots=True)
class SettingsPolicy:
    """Defaults and ceilings from the environment (`SettingsPolicy.from_env`)."""

    defaults: EffectiveSettings
    ceilings: EffectiveSettings
    # What `effective` worked out, per choice: every call asks (a batch, a rate-limit check).
    _memo: dict[ProjectSettings, EffectiveSettings] = field(
        default_factory=dict, compare=False, hash=False, repr=False
    )

    def effective(self, chosen: ProjectSettings) -> EffectiveSettings:
        known = self._memo.get(chosen)
        if known is None:
            if len(self._memo) > 10_000:
                self._memo.clear()
            known = self._memo[chosen] = self._resolve(chosen)
        return known

    def _resolve(self, chosen: ProjectSettings) -> EffectiveSettings:
        values: dict[str, Any] = {}
        for name in SETTING_NAMES:
            value = getattr(chosen, name)
            if value is None:
                value = getattr(self.defaults, name)
            ceiling = getattr(self.ceilings, name)
            if name == "content_types":
                # none allowed any more: the defaults, never formats nobody turned on
                defaults = tuple(t for t in self.defaults.content_types if t in ceiling)
                value = tuple(t for t in value if t in ceiling) or defaults or tuple(ceiling)
            elif name in SWITCHES:
                pass
            elif name.startswith(LIMITS):  # 0 is unlimited, and a ceiling of 0 is none
                value = ceiling if ceiling and (value == 0 or value > ceiling) else value
            else:
                value = min(value, ceiling)
            values[name] = value
        return EffectiveSettings(**values)

    def validate(self, chosen: ProjectSettings, prefix: str = "settings.") -> None:
        """Raise for a choice the ceilings do not allow; None is always allowed."""
        for name in SETTING_NAMES:
            value = getattr(chosen, name)
            if value is None:
                continue
            ceiling = getattr(self.ceilings, name)
            if name == "content_types":
                _check_content_types(value, ceiling, prefix + name)
                continue
            if name in SWITCHES:
                continue
            if not isinstance(value, int) or value < 0:
                raise InvalidArgument(prefix + name, "is negative", "send 0 or more")
            if name.startswith(LIMITS) and value == 0 and ceiling:
                raise SettingAboveCeiling(prefix + name, "0 (unlimited)", ceiling)
            if ceiling and value > ceiling:
                raise SettingAboveCeiling(prefix + name, value, ceiling)
            if value == 0 and not name.startswith((*LIMITS, "min_")):
                raise InvalidArgument(prefix + name, "is 0", "send a positive value")
        effective = self.effective(chosen)
        if effective.min_width > effective.max_width or effective.min_height > effective.max_height:
            raise InvalidArgument(
                prefix + "min_width", "is above the maximum", "keep minimums at most the maximums"
            )


def _check_content_types(value: tuple[str, ...], allowed: tuple[str, ...], name: str) -> None:
    if not value:
        raise InvalidArgument(name, "is empty", f"name at least one of {', '.join(allowed)}")
    for content_type in value:
        if content_type not in allowed:
            raise InvalidArgument(
                name,
                f"names {content_type[:100]!r}, which this deployment does not accept",
                f"choose from {', '.join(allowed)}",
            )


def global_content_types() -> tuple[str, ...]:
    """What a project accepts unless its settings choose otherwise (opt-in formats such as
    HEIC are in ALLOWED_CONTENT_TYPES, the ceiling, but not here)."""
    return DEFAULT_CONTENT_TYPES


@dataclass(frozen=True, slots=True)
class KeyLimits:
    """An API key's own rate limits per minute, per RPC class (0: none of its own; the
    project's limit applies to its calls either way)."""

    create: int = 0
    read: int = 0
    delete: int = 0
    admin: int = 0

    def of(self, rpc_class: str) -> int:
        limit: int = getattr(self, rpc_class)
        return limit

    def to_json(self) -> dict[str, int]:
        return {name: value for name in RPC_CLASSES if (value := self.of(name))}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> KeyLimits:
        return cls(**{name: int(raw[name]) for name in RPC_CLASSES if raw.get(name)})


NO_KEY_LIMITS = KeyLimits()


@dataclass(frozen=True, slots=True)
class Usage:
    """What a project stores, as its quotas count it: images not FAILED nor deleted, their
    bytes (verified size once READY, reserved bytes until then), uploads started today (UTC)."""

    images: int = 0
    bytes: int = 0
    uploads_today: int = 0


@dataclass(frozen=True, slots=True)
class Project:
    id: str
    display_name: str
    settings: ProjectSettings
    content_scope: str
    operator: bool = False
    created_at: datetime | None = None
    updated_at: datetime | None = None
    deleted_at: datetime | None = None
    purge_time: datetime | None = None
    usage: Usage | None = None  # read where the project is shown, not when it authenticates
    profile: VariantProfile | None = None  # its current variant profile; None: the default

    @property
    def deleted(self) -> bool:
        return self.deleted_at is not None


def new_operator_project() -> Project:
    """The operator project as bootstrapping creates it (with a fresh content scope)."""
    return Project(
        OPERATOR_PROJECT, "Operators", ProjectSettings(), secrets.token_hex(16), operator=True
    )


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of one RPC: an API key (`kind` "key", `id` the key id) or an mTLS identity
    (`kind` "mtls", `id` the SPIFFE id or CN), acting for one project."""

    kind: str
    id: str
    project_id: str
    scopes: frozenset[Scope]
    operator: bool = False  # of the operator project: projects.admin covers every project
    settings: ProjectSettings = field(default_factory=ProjectSettings)
    content_scope: str = ""
    via: str | None = None  # the tool the caller says it acts through (`cli:<user>`): unverified
    key_limits: KeyLimits = NO_KEY_LIMITS  # an API key's own rate limits
    profile: VariantProfile | None = None  # the project's variant profile; None: the default

    @property
    def name(self) -> str:
        """As the audit trail records it: `key:<id>`, `mtls:<identity>`, `cli:<user>`."""
        return f"{self.kind}:{self.id}"

    def administers(self, project_id: str) -> bool:
        return Scope.PROJECTS_ADMIN in self.scopes and (
            self.operator or self.project_id == project_id
        )


@dataclass(frozen=True, slots=True)
class Actor:
    """Who makes a change, as the audit trail records it (`key:<id>`, `mtls:<identity>`,
    `cli:<user>`), and the trace it belongs to."""

    principal: str
    trace_id: str | None = None
    via: str | None = None  # recorded in the event's details, as the caller claimed it


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    key_id: str
    project_id: str
    display_name: str
    scopes: frozenset[Scope]
    created_at: datetime
    created_by: str
    expire_time: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    limits: KeyLimits = NO_KEY_LIMITS


@dataclass(frozen=True, slots=True)
class Grant:
    """A credential as authentication needs it: its hash (keys), scopes, state and project."""

    kind: str  # "key" or "mtls"
    id: str
    secret_hash: bytes | None
    scopes: frozenset[Scope]
    expire_time: datetime | None
    revoked_at: datetime | None
    project: Project
    limits: KeyLimits = NO_KEY_LIMITS


@dataclass(frozen=True, slots=True)
class AuditEvent:
    at: datetime
    project_id: str | None
    principal: str
    action: str
    target: str
    trace_id: str | None
    outcome: str
    details: dict[str, Any]
