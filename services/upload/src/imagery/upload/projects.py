"""ProjectService use cases: projects and their API keys, for callers with `projects.admin`.

A caller administers its own project; a caller of the operator project administers all of
them. A project the caller may not administer answers exactly like one that does not exist.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar

from imagery.common.errors import (
    ApiKeyNotFound,
    InvalidArgument,
    MissingScope,
    ProjectBeingPurged,
    ProjectNotFound,
    ProjectProtected,
    SettingAboveCeiling,
)
from imagery.common.presets import DEFAULT_PRESETS, Preset
from imagery.common.profiles import (
    DEFAULT_BLURHASH_COMPONENTS,
    default_profile,
    validate_profile,
)
from imagery.common.telemetry import current_trace_id
from imagery.common.tenancy import (
    LIMITS,
    NO_KEY_LIMITS,
    RPC_CLASSES,
    SETTING_NAMES,
    Actor,
    KeyLimits,
    Principal,
    Project,
    ProjectSettings,
    SettingsPolicy,
    parse_scopes,
    require_project_id,
)
from imagery.upload.ports import ApiKeyInfo, NewKey, ProjectStore

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
_PROJECT_NAME = re.compile(r"^projects/([^/]+)$")
_KEY_NAME = re.compile(r"^projects/([^/]+)/apiKeys/([^/]+)$")
UPDATABLE = (
    "display_name",
    "settings",
    "variant_profile",
    *(f"settings.{n}" for n in SETTING_NAMES),
)


T = TypeVar("T")


def _actor(caller: Principal) -> Actor:
    return Actor(caller.name, current_trace_id(), caller.via)


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_page_token: str


def project_id_from_name(name: str, field: str = "name") -> str:
    match = _PROJECT_NAME.fullmatch(name)
    if match is None:
        raise InvalidArgument(field, f"{name[:100]!r} is not a project name", "send projects/{id}")
    return match.group(1)


def _display_name(value: str, field: str) -> str:
    if not value.strip() or len(value) > 200:
        raise InvalidArgument(field, "must be 1-200 characters", "send a short name for people")
    return value


def _page_size(value: int) -> int:
    """AIP-158: 0 is the default, more than the maximum is the maximum."""
    if value < 0:
        raise InvalidArgument(
            "page_size", f"is {value}", f"send 1-{MAX_PAGE_SIZE}, or 0 for {DEFAULT_PAGE_SIZE}"
        )
    return min(value, MAX_PAGE_SIZE) or DEFAULT_PAGE_SIZE


def populated(
    display_name: str, settings: ProjectSettings, profile: RequestedProfile | None = None
) -> tuple[str, ...]:
    """The fields an UpdateProject request without a mask sets."""
    named: tuple[str, ...] = ("display_name",) if display_name else ()
    named += ("variant_profile",) if profile is not None else ()
    return named + tuple(f"settings.{n}" for n in SETTING_NAMES if getattr(settings, n) is not None)


@dataclass(frozen=True, slots=True)
class RequestedProfile:
    """A variant profile as UpdateProject sent it, not yet validated."""

    presets: tuple[Preset, ...]
    lazy_policy: str
    blurhash_components: tuple[int, int] = DEFAULT_BLURHASH_COMPONENTS


def _require_operator_for_quotas(
    caller: Principal, before: ProjectSettings, after: ProjectSettings, policy: SettingsPolicy
) -> None:
    """Quotas and rate limits are the operators' to set: a project may not raise its own.
    Nor may it stop declaring its uploads where the deployment requires them by default."""
    if caller.operator:
        return
    for name in SETTING_NAMES:
        if name.startswith(LIMITS) and getattr(before, name) != getattr(after, name):
            raise MissingScope("projects.admin (of the operator project)", f"settings.{name}")
    if policy.defaults.require_declared_upload and after.require_declared_upload is False:
        raise MissingScope(
            "projects.admin (of the operator project)", "settings.require_declared_upload"
        )


def _encode_token(after: str, query: str) -> str:
    raw = json.dumps({"after": after, "query": query}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str, query: str) -> str:
    if not token:
        return ""
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if data["query"] == query and isinstance(data["after"], str):
            return str(data["after"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        pass
    raise InvalidArgument(
        "page_token",
        "is not a token from the previous page of this query",
        "send the next_page_token you were given, with the same other fields",
    )


class ProjectAdmin:
    def __init__(
        self,
        store: ProjectStore,
        policy: SettingsPolicy,
        *,
        retention_seconds: int,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        changed: Callable[[str], None] = lambda _change: None,
        presets: Sequence[Preset] = DEFAULT_PRESETS,
    ) -> None:
        """`changed` hears each change this replica commits at once (its own caches act on
        it before the call returns; other replicas hear it on the change bus). `presets`
        are the deployment's (VARIANT_PRESETS): the profile of a project that chose none."""
        self.default_profile = default_profile(presets)
        self._store = store
        self._policy = policy
        self._retention = retention_seconds
        self._clock = clock
        self._changed = changed

    @property
    def policy(self) -> SettingsPolicy:
        return self._policy

    async def create_project(
        self, caller: Principal, project_id: str, display_name: str, settings: ProjectSettings
    ) -> Project:
        if not caller.operator:
            raise MissingScope("projects.admin (of the operator project)", "CreateProject")
        require_project_id(project_id)
        self._policy.validate(settings, "project.settings.")
        project = Project(
            id=project_id,
            display_name=_display_name(display_name, "project.display_name"),
            settings=settings,
            content_scope=secrets.token_hex(16),
        )
        return await self._store.create_project(project, _actor(caller))

    async def get_project(self, caller: Principal, name: str) -> Project:
        return await self._visible(caller, project_id_from_name(name), name)

    async def update_project(
        self,
        caller: Principal,
        name: str,
        paths: Sequence[str],
        display_name: str,
        settings: ProjectSettings,
        profile: RequestedProfile | None = None,
    ) -> Project:
        project = await self._visible(caller, project_id_from_name(name, "project.name"), name)
        if not paths:  # AIP-134: no mask means every field the request populates
            paths = populated(display_name, settings, profile)
        if not paths:
            raise InvalidArgument(
                "update_mask", "is empty", f"name the fields to change: {', '.join(UPDATABLE)}"
            )
        if "*" in paths:
            paths = ("display_name", "settings")
        unknown = [p for p in paths if p not in UPDATABLE]
        if unknown:
            raise InvalidArgument(
                "update_mask",
                f"names {unknown[0][:80]!r}, which cannot be changed",
                f"name only {', '.join(UPDATABLE[:3])} or settings.<field>",
            )
        new_name = (
            _display_name(display_name, "project.display_name")
            if ("display_name" in paths)
            else None
        )
        new_settings = None
        fields = (
            SETTING_NAMES
            if "settings" in paths
            else tuple(p.removeprefix("settings.") for p in paths if p.startswith("settings."))
        )
        if fields:
            new_settings = project.settings.merged(settings, fields)
            self._policy.validate(new_settings, "project.settings.")
            _require_operator_for_quotas(caller, project.settings, new_settings, self._policy)
        new_profile = None
        if "variant_profile" in paths:
            if profile is None:
                raise InvalidArgument(
                    "project.variant_profile", "is not set", "send the presets of the new version"
                )
            new_profile = validate_profile(
                profile.presets,
                profile.lazy_policy,
                "project.variant_profile",
                profile.blurhash_components,
            )
        updated = await self._store.update_project(
            project.id,
            _actor(caller),
            display_name=new_name,
            settings=new_settings,
            profile=new_profile,
        )
        if updated is None:
            raise ProjectNotFound(name)
        self._changed(f"project:{project.id}")
        return updated

    async def list_projects(
        self, caller: Principal, page_size: int, page_token: str, show_deleted: bool
    ) -> Page[Project]:
        size = _page_size(page_size)
        query = f"projects:{show_deleted}"
        after = _decode_token(page_token, query)
        only = None if caller.operator else caller.project_id
        found = await self._store.list_projects(
            after=after, limit=size + 1, show_deleted=show_deleted, only=only
        )
        more = len(found) > size
        found = found[:size]
        return Page(found, _encode_token(found[-1].id, query) if more else "")

    async def delete_project(self, caller: Principal, name: str) -> Project:
        project = await self._visible(caller, project_id_from_name(name), name)
        if not caller.operator:
            raise MissingScope("projects.admin (of the operator project)", "DeleteProject")
        if project.operator:
            raise ProjectProtected(project.id)
        deleted = await self._store.delete_project(
            project.id, _actor(caller), retention_seconds=self._retention
        )
        if deleted is None:
            raise ProjectNotFound(name)
        self._changed(f"project:{project.id}")
        return deleted

    async def undelete_project(self, caller: Principal, name: str) -> Project:
        project = await self._visible(caller, project_id_from_name(name), name)
        if not caller.operator:
            raise MissingScope("projects.admin (of the operator project)", "UndeleteProject")
        restored = await self._store.undelete_project(project.id, _actor(caller))
        if restored is None:
            raise ProjectBeingPurged(project.id)
        self._changed(f"project:{project.id}")
        return restored

    async def create_api_key(
        self,
        caller: Principal,
        parent: str,
        display_name: str,
        scopes: Sequence[str],
        expire_time: datetime | None,
        limits: KeyLimits = NO_KEY_LIMITS,
    ) -> tuple[NewKey, ApiKeyInfo]:
        project = await self._visible(caller, project_id_from_name(parent, "parent"), parent)
        granted = parse_scopes(tuple(scopes), "api_key.scopes")
        self._check_key_limits(limits)
        if expire_time is not None and expire_time <= self._clock():
            raise InvalidArgument(
                "api_key.expire_time", "is in the past", "send a future time, or none"
            )
        made = await self._store.create_key(
            project.id,
            _actor(caller),
            display_name=_display_name(display_name, "api_key.display_name"),
            scopes=sorted(granted),
            expire_time=expire_time,
            limits=limits,
        )
        if made is None:
            raise ProjectNotFound(parent)
        return made

    def _check_key_limits(self, limits: KeyLimits) -> None:
        """A key's limit only narrows its project's, so any project admin may set one; it
        stays within the deployment's ceiling for the class, like a project's."""
        for name in RPC_CLASSES:
            value, field = limits.of(name), f"api_key.rate_{name}_per_minute"
            ceiling: int = getattr(self._policy.ceilings, f"rate_{name}_per_minute")
            if value < 0:
                raise InvalidArgument(field, "is negative", "send 0 (no key limit) or more")
            if ceiling and value > ceiling:
                raise SettingAboveCeiling(field, value, ceiling)

    async def list_api_keys(
        self, caller: Principal, parent: str, page_size: int, page_token: str
    ) -> Page[ApiKeyInfo]:
        project = await self._visible(caller, project_id_from_name(parent, "parent"), parent)
        size = _page_size(page_size)
        query = f"keys:{project.id}"
        after = _decode_token(page_token, query)
        found = await self._store.list_keys(project.id, after=after, limit=size + 1)
        more = len(found) > size
        found = found[:size]
        return Page(found, _encode_token(found[-1].key_id, query) if more else "")

    async def revoke_api_key(self, caller: Principal, name: str) -> ApiKeyInfo:
        match = _KEY_NAME.fullmatch(name)
        if match is None:
            raise InvalidArgument(
                "name", f"{name[:100]!r} is not a key name", "send projects/{id}/apiKeys/{key}"
            )
        project_id, key_id = match.groups()
        if not caller.administers(project_id):
            raise ApiKeyNotFound(name)
        revoked = await self._store.revoke_key(project_id, key_id, _actor(caller))
        if revoked is None:
            raise ApiKeyNotFound(name)
        self._changed(f"key:{key_id}")
        return revoked

    async def _visible(self, caller: Principal, project_id: str, name: str) -> Project:
        """The project, if the caller administers it; else exactly like a missing one."""
        if not caller.administers(project_id):
            raise ProjectNotFound(name)
        project = await self._store.get_project(project_id)
        if project is None:
            raise ProjectNotFound(name)
        return project
