"""The local stack's API keys: an admin key of the operator project and an ordinary key of
the `default` project. Secrets are shown once by imagery, so the stack keeps them in
`.devstack/keys.json` (mode 0600) and reuses them while they still work (`make run
KEEP_DATA=1`); otherwise it makes new ones."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import os
from pathlib import Path

from imagery.common.db.pool import create_pool
from imagery.common.db.projects import PostgresProjects
from imagery.common.errors import ProjectAlreadyExists, Unauthenticated
from imagery.common.grpc.auth import Authenticator
from imagery.common.tenancy import (
    ALL_SCOPES,
    DEFAULT_PROJECT,
    IMAGE_SCOPES,
    OPERATOR_PROJECT,
    Actor,
    Scope,
    new_operator_project,
)

ADMIN_KEY = "IMAGERY_ADMIN_KEY"
API_KEY = "IMAGERY_API_KEY"


def ensure_local_keys(database_url: str, path: Path) -> dict[str, str]:
    """{IMAGERY_ADMIN_KEY: ..., IMAGERY_API_KEY: ...}, working keys for the local stack,
    kept in `path`."""
    saved: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    keys = asyncio.run(local_keys(database_url, saved))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    os.chmod(path, 0o600)
    path.write_text(json.dumps(keys, indent=2) + "\n")
    return keys


async def local_keys(database_url: str, saved: dict[str, str] | None = None) -> dict[str, str]:
    """The `saved` keys that still work, and new ones for the rest (also for tests)."""
    saved = saved or {}
    pool = await create_pool(database_url, max_size=2)
    projects = PostgresProjects(pool)
    check = Authenticator(projects)  # the services' own check of a key
    try:
        actor = Actor(f"cli:{getpass.getuser()}")
        await ensure_operator_project(projects, actor)
        wanted: dict[str, tuple[str, tuple[Scope, ...], str]] = {
            ADMIN_KEY: (OPERATOR_PROJECT, ALL_SCOPES, "local stack admin"),
            API_KEY: (DEFAULT_PROJECT, IMAGE_SCOPES, "local stack"),
        }
        keys = {}
        for name, (project, scopes, label) in wanted.items():
            secret = saved.get(name)
            if secret is None or not await _works(check, secret):
                made = await projects.bootstrap_key(project, actor, key_name=label, scopes=scopes)
                secret = made.secret
            keys[name] = secret
    finally:
        await check.close()  # its last-use write, before the pool goes
        await pool.close()
    return keys


async def ensure_operator_project(projects: PostgresProjects, actor: Actor) -> None:
    if await projects.get_project(OPERATOR_PROJECT) is not None:
        return
    with contextlib.suppress(ProjectAlreadyExists):  # another start made it first
        await projects.create_project(new_operator_project(), actor)


async def _works(check: Authenticator, secret: str) -> bool:
    try:
        await check.authenticate({"authorization": f"Bearer {secret}"}, None)
    except Unauthenticated:
        return False
    return True
