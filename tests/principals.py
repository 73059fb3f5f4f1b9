"""Callers for tests that call use cases directly: what the gRPC edge would have
authenticated."""

from __future__ import annotations

import dataclasses

from imagery.common.config import Env, project_policy_from_env
from imagery.common.tenancy import DEFAULT_PROJECT, Principal, Scope, SettingsPolicy

CALLER = Principal(
    kind="key", id="testkeytestkeyaa", project_id=DEFAULT_PROJECT, scopes=frozenset(Scope)
)
OTHER = Principal(
    kind="key",
    id="otherkeyotherkey",
    project_id="other-team",
    scopes=frozenset(Scope),
    content_scope="0123456789abcdef0123456789abcdef",
)


def policy(**environ: int | str) -> SettingsPolicy:
    """The deployment's defaults and ceilings, from environment variables given by name."""
    return project_policy_from_env(Env({k.upper(): str(v) for k, v in environ.items()}))


def caller(**changes: object) -> Principal:
    return dataclasses.replace(CALLER, **changes)  # type: ignore[arg-type]
