"""Projects, API keys, mTLS identities and the audit trail in Postgres.

Every change writes its audit event and announces itself on the change bus (`pg_notify`, see
`imagery.common.db.changes`) in the transaction that makes it, so a change, its record and
its notice commit together or not at all.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import asyncpg

from imagery.common.api_keys import NewKey, new_key
from imagery.common.db.pool import translates_postgres_errors
from imagery.common.db.usage import USAGE_COLUMNS, usage_from_row
from imagery.common.errors import ProjectAlreadyExists
from imagery.common.profiles import VariantProfile, profile_from_json
from imagery.common.tenancy import (
    NO_KEY_LIMITS,
    Actor,
    ApiKeyInfo,
    AuditEvent,
    Grant,
    KeyLimits,
    Project,
    ProjectSettings,
    Scope,
)

CHANNEL = "imagery_changes"
_PROJECT_COLUMNS = """p.id, p.display_name, p.settings, p.content_scope, p.operator,
    p.created_at, p.updated_at, p.deleted_at, p.purge_time, p.variant_profile"""
_KEY_COLUMNS = """k.id, k.project_id, k.display_name, k.scopes, k.created_at, k.created_by,
    k.expire_time, k.revoked_at, k.last_used_at, k.rate_limits"""
_AUDIT = """INSERT INTO audit_events (project_id, principal, action, target, trace_id, outcome,
                                      details)
            VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)"""


def project_from_row(row: asyncpg.Record, offset: int = 0) -> Project:
    settings = row[offset + 2]
    return Project(
        id=row[offset],
        display_name=row[offset + 1],
        settings=ProjectSettings.from_json(
            json.loads(settings) if isinstance(settings, str) else settings
        ),
        content_scope=row[offset + 3],
        operator=row[offset + 4],
        created_at=row[offset + 5],
        updated_at=row[offset + 6],
        deleted_at=row[offset + 7],
        purge_time=row[offset + 8],
        profile=profile_from_json(row[offset + 9]),
    )


# What a project stores, read with it where it is shown (not on the authentication path).
_USAGE_JOIN = "LEFT JOIN project_usage u ON u.project_id = p.id"


# The project row is locked by the UPDATE before, so versions are numbered one at a time.
_NEXT_VERSION = """
SELECT COALESCE(MAX(version), 0) + 1 AS version, now() AS created_at
  FROM variant_profiles WHERE project_id = $1"""
_INSERT_VERSION = """
INSERT INTO variant_profiles (project_id, version, profile, created_by, created_at)
VALUES ($1, $2, $3::jsonb, $4, $5)"""


async def _new_profile_version(
    conn: asyncpg.pool.PoolConnectionProxy, project_id: str, profile: VariantProfile, actor: Actor
) -> asyncpg.Record:
    numbered = await conn.fetchrow(_NEXT_VERSION, project_id)
    assert numbered is not None  # an aggregate: always one row
    stored = replace(profile, version=numbered["version"], created_at=numbered["created_at"])
    body = json.dumps(stored.to_json())
    await conn.execute(
        _INSERT_VERSION, project_id, stored.version, body, actor.principal, stored.created_at
    )
    row = await conn.fetchrow(
        f"""UPDATE projects p SET variant_profile = $2::jsonb WHERE p.id = $1
         RETURNING {_PROJECT_COLUMNS}""",
        project_id,
        body,
    )
    assert row is not None  # locked by this transaction's UPDATE
    return row


def _decoded(raw: Any) -> Any:
    return json.loads(raw) if isinstance(raw, str) else raw


def _with_usage(row: asyncpg.Record) -> Project:
    return replace(project_from_row(row), usage=usage_from_row(row))


def _limits_detail(limits: KeyLimits) -> dict[str, Any]:
    rates = limits.to_json()
    return {"rate_limits_per_minute": rates} if rates else {}


def _scopes(values: Sequence[str]) -> frozenset[Scope]:
    known = {s.value: s for s in Scope}
    return frozenset(known[v] for v in values if v in known)


def _key_from_row(row: asyncpg.Record) -> ApiKeyInfo:
    return ApiKeyInfo(
        row["id"],
        row["project_id"],
        row["display_name"],
        _scopes(row["scopes"]),
        row["created_at"],
        row["created_by"],
        row["expire_time"],
        row["revoked_at"],
        row["last_used_at"],
        _key_limits(row["rate_limits"]),
    )


def _key_limits(raw: str | dict[str, Any]) -> KeyLimits:
    return KeyLimits.from_json(json.loads(raw) if isinstance(raw, str) else raw)


async def audit(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy,
    actor: Actor,
    action: str,
    target: str,
    *,
    project_id: str | None,
    outcome: str = "ok",
    details: dict[str, Any] | None = None,
) -> None:
    await conn.execute(
        _AUDIT,
        project_id,
        actor.principal,
        action,
        target,
        actor.trace_id,
        outcome,
        json.dumps({**(details or {}), **({"via": actor.via} if actor.via else {})}),
    )


async def notify(conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy, change: str) -> None:
    """Announce a change to every process; delivered when the transaction commits."""
    await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, change)


class PostgresProjects:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @translates_postgres_errors
    async def create_project(self, project: Project, actor: Actor) -> Project:
        async with self._pool.acquire() as conn, conn.transaction():
            return await self._insert_project(conn, project, actor)

    @translates_postgres_errors
    async def bootstrap_project(
        self, project: Project, actor: Actor, *, key_name: str, scopes: Sequence[Scope]
    ) -> tuple[Project, NewKey]:
        """A project with its first key, in one transaction (the CLI's bootstrap)."""
        async with self._pool.acquire() as conn, conn.transaction():
            created = await self._insert_project(conn, project, actor)
            made, _ = await self._insert_key(
                conn, project.id, key_name, scopes, None, NO_KEY_LIMITS, actor
            )
        return created, made

    @translates_postgres_errors
    async def bootstrap_key(
        self, project_id: str, actor: Actor, *, key_name: str, scopes: Sequence[Scope]
    ) -> NewKey:
        async with self._pool.acquire() as conn, conn.transaction():
            made, _ = await self._insert_key(
                conn, project_id, key_name, scopes, None, NO_KEY_LIMITS, actor
            )
        return made

    async def _insert_project(
        self, conn: asyncpg.pool.PoolConnectionProxy, project: Project, actor: Actor
    ) -> Project:
        try:
            async with conn.transaction():  # a savepoint: the caller's transaction survives
                row = await conn.fetchrow(
                    f"""INSERT INTO projects AS p (id, display_name, settings, content_scope,
                                                  operator)
                        VALUES ($1, $2, $3::jsonb, $4, $5) RETURNING {_PROJECT_COLUMNS}""",
                    project.id,
                    project.display_name,
                    json.dumps(project.settings.to_json()),
                    project.content_scope,
                    project.operator,
                )
        except asyncpg.UniqueViolationError as exc:
            raise ProjectAlreadyExists(project.id) from exc
        assert row is not None
        await audit(
            conn,
            actor,
            "project.create",
            f"projects/{project.id}",
            project_id=project.id,
            details={"settings": project.settings.to_json()},
        )
        return project_from_row(row)

    @translates_postgres_errors
    async def get_project(self, project_id: str) -> Project | None:
        row = await self._pool.fetchrow(
            f"SELECT {_PROJECT_COLUMNS}, {USAGE_COLUMNS} FROM projects p {_USAGE_JOIN}"
            " WHERE p.id = $1",
            project_id,
        )
        return None if row is None else _with_usage(row)

    @translates_postgres_errors
    async def list_projects(
        self, *, after: str, limit: int, show_deleted: bool, only: str | None
    ) -> list[Project]:
        rows = await self._pool.fetch(
            f"""SELECT {_PROJECT_COLUMNS}, {USAGE_COLUMNS} FROM projects p {_USAGE_JOIN}
                 WHERE p.id > $1 AND ($3 OR p.deleted_at IS NULL)
                   AND ($4::text IS NULL OR p.id = $4)
                 ORDER BY p.id LIMIT $2""",
            after,
            limit,
            show_deleted,
            only,
        )
        return [_with_usage(r) for r in rows]

    @translates_postgres_errors
    async def update_project(
        self,
        project_id: str,
        actor: Actor,
        *,
        display_name: str | None,
        settings: ProjectSettings | None,
        profile: VariantProfile | None = None,
    ) -> Project | None:
        """Change what is given (None: unchanged). A profile becomes the project's next
        version (its number and time are set here), kept for good in `variant_profiles`."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"""UPDATE projects p
                       SET display_name = COALESCE($2, p.display_name),
                           settings = COALESCE($3::jsonb, p.settings), updated_at = now()
                     WHERE p.id = $1 AND p.deleted_at IS NULL
                 RETURNING {_PROJECT_COLUMNS}""",
                project_id,
                display_name,
                None if settings is None else json.dumps(settings.to_json()),
            )
            if row is None:
                return None
            changed: dict[str, Any] = {}
            if display_name is not None:
                changed["display_name"] = display_name
            if settings is not None:
                changed["settings"] = settings.to_json()
            if profile is not None:
                row = await _new_profile_version(conn, project_id, profile, actor)
                changed["variant_profile"] = _decoded(row["variant_profile"])
            await audit(
                conn,
                actor,
                "project.update",
                f"projects/{project_id}",
                project_id=project_id,
                details=changed,
            )
            await notify(conn, f"project:{project_id}")
        return project_from_row(row)

    @translates_postgres_errors
    async def profile_versions(self, project_id: str) -> list[VariantProfile]:
        """Every version the project has had, oldest first (the default, 0, has no row)."""
        rows = await self._pool.fetch(
            "SELECT profile FROM variant_profiles WHERE project_id = $1 ORDER BY version",
            project_id,
        )
        return [VariantProfile.from_json(_decoded(r["profile"])) for r in rows]

    @translates_postgres_errors
    async def delete_project(
        self, project_id: str, actor: Actor, *, retention_seconds: int
    ) -> Project | None:
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"""UPDATE projects p
                       SET deleted_at = COALESCE(p.deleted_at, now()),
                           purge_time = COALESCE(p.purge_time,
                                                 now() + make_interval(secs => $2)),
                           updated_at = CASE WHEN p.deleted_at IS NULL THEN now()
                                             ELSE p.updated_at END
                     WHERE p.id = $1 AND NOT p.operator
                 RETURNING {_PROJECT_COLUMNS}""",
                project_id,
                retention_seconds,
            )
            if row is None:
                return None
            await audit(
                conn, actor, "project.delete", f"projects/{project_id}", project_id=project_id
            )
            await notify(conn, f"project:{project_id}")
        return project_from_row(row)

    @translates_postgres_errors
    async def undelete_project(self, project_id: str, actor: Actor) -> Project | None:
        """The project live again, its queued purge cancelled; None once a purge has begun
        (the processor also re-checks before every batch, so a purge that starts meanwhile
        removes nothing)."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT 1 FROM projects WHERE id = $1 FOR UPDATE", project_id)
            if await conn.fetchval(
                "SELECT 1 FROM admin_jobs WHERE kind = 'purge_project' AND target = $1"
                " AND state = 'running'",
                project_id,
            ):
                return None
            await conn.execute(
                """UPDATE admin_jobs SET state = 'failed', finished_at = now(),
                          error = 'cancelled: the project was restored'
                    WHERE kind = 'purge_project' AND target = $1 AND state = 'queued'""",
                project_id,
            )
            row = await conn.fetchrow(
                f"""UPDATE projects p
                       SET deleted_at = NULL, purge_time = NULL,
                           updated_at = CASE WHEN p.deleted_at IS NULL THEN p.updated_at
                                             ELSE now() END
                     WHERE p.id = $1 RETURNING {_PROJECT_COLUMNS}""",
                project_id,
            )
            if row is None:
                return None
            await audit(
                conn, actor, "project.undelete", f"projects/{project_id}", project_id=project_id
            )
            await notify(conn, f"project:{project_id}")
        return project_from_row(row)

    async def _insert_key(
        self,
        conn: asyncpg.pool.PoolConnectionProxy,
        project_id: str,
        display_name: str,
        scopes: Sequence[Scope],
        expire_time: datetime | None,
        limits: KeyLimits,
        actor: Actor,
    ) -> tuple[NewKey, ApiKeyInfo]:
        made = new_key()
        row = await conn.fetchrow(
            f"""INSERT INTO api_keys AS k (id, project_id, display_name, secret_hash, scopes,
                                          expire_time, created_by, rate_limits)
                VALUES ($1, $2, $3, $4, $5::text[], $6, $7, $8::jsonb)
                RETURNING {_KEY_COLUMNS}""",
            made.key_id,
            project_id,
            display_name,
            made.secret_hash,
            sorted(s.value for s in scopes),
            expire_time,
            actor.principal,
            json.dumps(limits.to_json()),
        )
        assert row is not None
        await notify(conn, f"key:{made.key_id}")  # no replica may keep "unknown key" for it
        await audit(
            conn,
            actor,
            "api_key.create",
            f"projects/{project_id}/apiKeys/{made.key_id}",
            project_id=project_id,
            details={"scopes": sorted(s.value for s in scopes), **_limits_detail(limits)},
        )
        return made, _key_from_row(row)

    @translates_postgres_errors
    async def create_key(
        self,
        project_id: str,
        actor: Actor,
        *,
        display_name: str,
        scopes: Sequence[Scope],
        expire_time: datetime | None,
        limits: KeyLimits = NO_KEY_LIMITS,
    ) -> tuple[NewKey, ApiKeyInfo] | None:
        """None when the project does not exist or is deleted."""
        async with self._pool.acquire() as conn, conn.transaction():
            live = await conn.fetchval(
                "SELECT 1 FROM projects WHERE id = $1 AND deleted_at IS NULL FOR SHARE",
                project_id,
            )
            if live is None:
                return None
            return await self._insert_key(
                conn, project_id, display_name, scopes, expire_time, limits, actor
            )

    @translates_postgres_errors
    async def list_keys(self, project_id: str, *, after: str, limit: int) -> list[ApiKeyInfo]:
        rows = await self._pool.fetch(
            f"""SELECT {_KEY_COLUMNS} FROM api_keys k
                 WHERE k.project_id = $1 AND (k.created_at, k.id) > (
                       COALESCE((SELECT created_at FROM api_keys
                                  WHERE id = $2 AND project_id = $1),
                                '-infinity'::timestamptz), $2)
                 ORDER BY k.created_at, k.id LIMIT $3""",
            project_id,
            after,
            limit,
        )
        return [_key_from_row(r) for r in rows]

    @translates_postgres_errors
    async def revoke_key(self, project_id: str, key_id: str, actor: Actor) -> ApiKeyInfo | None:
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"""UPDATE api_keys k SET revoked_at = COALESCE(k.revoked_at, now())
                     WHERE k.project_id = $1 AND k.id = $2 RETURNING {_KEY_COLUMNS}""",
                project_id,
                key_id,
            )
            if row is None:
                return None
            await audit(
                conn,
                actor,
                "api_key.revoke",
                f"projects/{project_id}/apiKeys/{key_id}",
                project_id=project_id,
            )
            await notify(conn, f"key:{key_id}")
        return _key_from_row(row)

    @translates_postgres_errors
    async def grant_for_key(self, key_id: str) -> Grant | None:
        row = await self._pool.fetchrow(
            f"""SELECT k.secret_hash, k.scopes, k.expire_time, k.revoked_at, k.rate_limits,
                       {_PROJECT_COLUMNS}
                  FROM api_keys k JOIN projects p ON p.id = k.project_id
                 WHERE k.id = $1""",
            key_id,
        )
        if row is None:
            return None
        return Grant(
            "key",
            key_id,
            row[0],
            _scopes(row[1]),
            row[2],
            row[3],
            project_from_row(row, 5),
            _key_limits(row[4]),
        )

    @translates_postgres_errors
    async def grant_for_identity(self, identity: str) -> Grant | None:
        row = await self._pool.fetchrow(
            f"""SELECT i.scopes, i.revoked_at, {_PROJECT_COLUMNS}
                  FROM client_identities i JOIN projects p ON p.id = i.project_id
                 WHERE i.identity = $1""",
            identity,
        )
        if row is None:
            return None
        return Grant(
            "mtls", identity, None, _scopes(row[0]), None, row[1], project_from_row(row, 2)
        )

    @translates_postgres_errors
    async def touch_keys(self, key_ids: Sequence[str]) -> None:
        """Record use, at most once a minute per key."""
        await self._pool.execute(
            """UPDATE api_keys SET last_used_at = now()
                WHERE id = ANY($1::text[])
                  AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')""",
            list(key_ids),
        )

    @translates_postgres_errors
    async def map_identity(
        self, identity: str, project_id: str, scopes: Sequence[Scope], actor: Actor
    ) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """INSERT INTO client_identities (identity, project_id, scopes, created_by)
                   VALUES ($1, $2, $3::text[], $4)
                   ON CONFLICT (identity) DO UPDATE
                      SET project_id = EXCLUDED.project_id, scopes = EXCLUDED.scopes,
                          revoked_at = NULL""",
                identity,
                project_id,
                sorted(s.value for s in scopes),
                actor.principal,
            )
            await audit(
                conn,
                actor,
                "identity.map",
                f"identities/{identity}",
                project_id=project_id,
                details={"scopes": sorted(s.value for s in scopes)},
            )
            await notify(conn, f"identity:{identity}")

    @translates_postgres_errors
    async def list_identities(self, *, project_id: str | None) -> list[Grant]:
        """Mapped mTLS identities, revoked ones included, of one project or all, by project
        and identity."""
        rows = await self._pool.fetch(
            f"""SELECT i.identity, i.scopes, i.revoked_at, {_PROJECT_COLUMNS}
                  FROM client_identities i JOIN projects p ON p.id = i.project_id
                 WHERE ($1::text IS NULL OR i.project_id = $1)
                 ORDER BY i.project_id, i.identity""",
            project_id,
        )
        return [
            Grant("mtls", r[0], None, _scopes(r[1]), None, r[2], project_from_row(r, 3))
            for r in rows
        ]

    @translates_postgres_errors
    async def revoke_identity(self, identity: str, actor: Actor) -> bool:
        async with self._pool.acquire() as conn, conn.transaction():
            project_id = await conn.fetchval(
                """UPDATE client_identities SET revoked_at = COALESCE(revoked_at, now())
                    WHERE identity = $1 RETURNING project_id""",
                identity,
            )
            if project_id is None:
                return False
            await audit(
                conn, actor, "identity.revoke", f"identities/{identity}", project_id=project_id
            )
            await notify(conn, f"identity:{identity}")
        return True

    @translates_postgres_errors
    async def audit_events(
        self, *, project_id: str | None, limit: int, before_id: int | None = None
    ) -> list[AuditEvent]:
        rows = await self._pool.fetch(
            """SELECT at, project_id, principal, action, target, trace_id, outcome, details
                 FROM audit_events
                WHERE ($1::text IS NULL OR project_id = $1)
                  AND ($3::bigint IS NULL OR id < $3)
                ORDER BY at DESC, id DESC LIMIT $2""",
            project_id,
            limit,
            before_id,
        )
        return [
            AuditEvent(
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                r[5],
                r[6],
                json.loads(r[7]) if isinstance(r[7], str) else r[7],
            )
            for r in rows
        ]
