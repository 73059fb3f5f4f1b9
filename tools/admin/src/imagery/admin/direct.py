"""The commands that go straight to Postgres: bootstrap (before any key exists, nothing else
could let an operator in), mTLS identities, the audit trail and migrations. Every change is
audited as `cli:<os user>`; `dry_run` validates against the database and changes nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import asyncpg

from imagery.admin.actor import cli_principal
from imagery.admin.output import CliError, iso
from imagery.common.api_keys import NewKey
from imagery.common.db.migrate import MigrationError, load_migrations, migrate
from imagery.common.db.pool import create_pool
from imagery.common.db.projects import PostgresProjects
from imagery.common.errors import ImageryError
from imagery.common.tenancy import (
    IMAGE_SCOPES,
    OPERATOR_PROJECT,
    Actor,
    Grant,
    Project,
    Scope,
    new_operator_project,
)

T = TypeVar("T")
ADMIN_SCOPES = (Scope.PROJECTS_ADMIN, *IMAGE_SCOPES)
# Serialises concurrent bootstraps, so two operators cannot both find "no key yet".
_BOOTSTRAP_LOCK = 0x1A6E_B007
_ADMIN_KEY_NAME = "admin key (bootstrap)"
_PROJECT_KEY_NAME = "project key (bootstrap)"
Plain = dict[str, Any]


def actor() -> Actor:
    return Actor(cli_principal())


def run(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run one command's database work, its failures turned into one actionable sentence."""
    try:
        return asyncio.run(work())
    except ImageryError as exc:
        raise CliError(exc.message) from exc
    except asyncpg.UndefinedTableError as exc:
        raise CliError(
            f"The database has no imagery schema yet ({exc}): run `imagery-admin migrate` first."
        ) from exc
    except asyncpg.PostgresError as exc:
        raise CliError(
            f"Postgres refused the command ({type(exc).__name__}: {exc}): check the role in "
            "DATABASE_URL may read and write the imagery tables."
        ) from exc
    except MigrationError as exc:
        raise CliError(str(exc)) from exc
    except (OSError, ValueError, asyncpg.InterfaceError) as exc:
        raise CliError(
            f"Cannot use the database ({type(exc).__name__}: {exc}): check DATABASE_URL."
        ) from exc


@asynccontextmanager
async def _connected(dsn: str) -> AsyncIterator[tuple[asyncpg.Pool, PostgresProjects]]:
    pool = await create_pool(dsn, min_size=1, max_size=3)
    try:
        yield pool, PostgresProjects(pool)
    finally:
        await pool.close()


def project_data(project: Project) -> Plain:
    return {
        "name": f"projects/{project.id}",
        "project_id": project.id,
        "display_name": project.display_name,
        "operator": project.operator,
        "settings": project.settings.to_json(),
        "effective_settings": None,
        "create_time": iso(project.created_at),
        "update_time": iso(project.updated_at),
        "delete_time": iso(project.deleted_at),
        "purge_time": iso(project.purge_time),
    }


def _key_data(made: NewKey, project_id: str, name: str, scopes: Sequence[Scope]) -> Plain:
    return {
        "name": f"projects/{project_id}/apiKeys/{made.key_id}",
        "key_id": made.key_id,
        "project_id": project_id,
        "display_name": name,
        "scopes": sorted(s.value for s in scopes),
        "key": made.secret,
    }


async def bootstrap(dsn: str, *, project_key: str | None, dry_run: bool) -> Plain:
    async with _connected(dsn) as (pool, projects), pool.acquire() as lock, lock.transaction():
        await lock.execute("SELECT pg_advisory_xact_lock($1)", _BOOTSTRAP_LOCK)
        operator = await _check_bootstrap(pool, projects, project_key)
        if dry_run:
            return {"dry_run": True, "actions": _bootstrap_plan(operator, project_key)}
        return await _bootstrap(projects, operator, project_key)


# Bootstrapping is the way in only while no operator admin key works (none made yet, or every
# one revoked or expired): then an operator can never be locked out, and never let a second in.
_WORKING_ADMIN_KEY = """
SELECT EXISTS (
    SELECT 1 FROM api_keys k JOIN projects p ON p.id = k.project_id
     WHERE p.operator AND p.deleted_at IS NULL AND 'projects.admin' = ANY(k.scopes)
       AND k.revoked_at IS NULL AND (k.expire_time IS NULL OR k.expire_time > now()))"""


async def _check_bootstrap(
    pool: asyncpg.Pool, projects: PostgresProjects, project_key: str | None
) -> Project | None:
    """The operator project if it exists; refuses when bootstrapping is not the way in."""
    if await pool.fetchval(_WORKING_ADMIN_KEY):
        raise CliError(
            "A working admin key of the operator project exists, so there is nothing to "
            "bootstrap: make more with `imagery-admin keys create PROJECT ...` and that key "
            "(--key)."
        )
    operator = await projects.get_project(OPERATOR_PROJECT)
    if operator is not None and not operator.operator:
        raise CliError(
            f"Project {OPERATOR_PROJECT!r} exists but is not marked as the operator project: "
            "set projects.operator for it in Postgres, then bootstrap again."
        )
    if project_key is not None:
        target = await projects.get_project(project_key)
        if target is None or target.deleted:
            raise CliError(
                f"Project {project_key!r} does not exist or is deleted: bootstrap without "
                "--project-key, then create it with `imagery-admin projects create`."
            )
    return operator


def _bootstrap_plan(operator: Project | None, project_key: str | None) -> list[str]:
    plan = [] if operator else [f"create the operator project projects/{OPERATOR_PROJECT}"]
    plan.append(
        f"create an admin key in projects/{OPERATOR_PROJECT} with scopes "
        + ", ".join(sorted(ADMIN_SCOPES))
    )
    if project_key is not None:
        plan.append(
            f"create a key in projects/{project_key} with scopes " + ", ".join(sorted(IMAGE_SCOPES))
        )
    return plan


async def _bootstrap(
    projects: PostgresProjects, operator: Project | None, project_key: str | None
) -> Plain:
    who = actor()
    created = operator is None
    if operator is None:
        operator, admin = await projects.bootstrap_project(
            new_operator_project(), who, key_name=_ADMIN_KEY_NAME, scopes=ADMIN_SCOPES
        )
    else:
        admin = await projects.bootstrap_key(
            OPERATOR_PROJECT, who, key_name=_ADMIN_KEY_NAME, scopes=ADMIN_SCOPES
        )
    keys = [_key_data(admin, OPERATOR_PROJECT, _ADMIN_KEY_NAME, ADMIN_SCOPES)]
    if project_key is not None:
        made = await projects.bootstrap_key(
            project_key, who, key_name=_PROJECT_KEY_NAME, scopes=IMAGE_SCOPES
        )
        keys.append(_key_data(made, project_key, _PROJECT_KEY_NAME, IMAGE_SCOPES))
    return {"created_project": created, "project": project_data(operator), "keys": keys}


def _identity_data(grant: Grant) -> Plain:
    return {
        "identity": grant.id,
        "project_id": grant.project.id,
        "scopes": sorted(s.value for s in grant.scopes),
        "revoke_time": iso(grant.revoked_at),
    }


async def _find_identity(projects: PostgresProjects, identity: str) -> Grant | None:
    found = [g for g in await projects.list_identities(project_id=None) if g.id == identity]
    return found[0] if found else None


async def map_identity(
    dsn: str, identity: str, project_id: str, scopes: Sequence[Scope], *, dry_run: bool
) -> Plain:
    async with _connected(dsn) as (_, projects):
        project = await projects.get_project(project_id)
        if project is None or project.deleted:
            raise CliError(
                f"Project {project_id!r} does not exist or is deleted: "
                "`imagery-admin projects list` shows the live ones."
            )
        before = await _find_identity(projects, identity)
        data: Plain = {
            "identity": identity,
            "project_id": project_id,
            "scopes": sorted(s.value for s in scopes),
            "previous": None if before is None else _identity_data(before),
        }
        if dry_run:
            return {"dry_run": True, **data}
        await projects.map_identity(identity, project_id, scopes, actor())
        return data


async def revoke_identity(dsn: str, identity: str, *, dry_run: bool) -> Plain:
    async with _connected(dsn) as (_, projects):
        before = await _find_identity(projects, identity)
        if before is None:
            raise CliError(
                f"No identity {identity!r} is mapped: `imagery-admin identities list` shows "
                "those that are."
            )
        already = before.revoked_at is not None
        if not dry_run and not already:
            await projects.revoke_identity(identity, actor())
        data = {"already_revoked": already, **_identity_data(before)}
        return {"dry_run": True, **data} if dry_run else data


async def list_identities(dsn: str, project_id: str | None) -> list[Plain]:
    async with _connected(dsn) as (_, projects):
        return [_identity_data(g) for g in await projects.list_identities(project_id=project_id)]


async def audit_events(dsn: str, project_id: str | None, limit: int) -> list[Plain]:
    async with _connected(dsn) as (_, projects):
        events = await projects.audit_events(project_id=project_id, limit=limit)
    return [
        {
            "time": iso(e.at),
            "project_id": e.project_id,
            "principal": e.principal,
            "action": e.action,
            "target": e.target,
            "trace_id": e.trace_id,
            "outcome": e.outcome,
            "details": e.details,
        }
        for e in events
    ]


async def run_migrations(dsn: str, *, dry_run: bool) -> Plain:
    if not dry_run:
        return {"applied": await migrate(dsn)}
    known = load_migrations()
    conn = await asyncpg.connect(dsn)
    try:
        done: set[int] = set()
        if await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL"):
            done = {r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")}
    finally:
        await conn.close()
    return {"dry_run": True, "pending": [m.name for m in known if m.version not in done]}
