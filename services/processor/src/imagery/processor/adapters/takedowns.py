"""Takedown jobs in Postgres (migration 0027): the content addresses of the blocked bytes in
every project, the rows of that content once nothing references it, and the job's result
with the audit event of what was deleted and invalidated."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from typing import Any

import asyncpg

from imagery.common.db.pool import translates_postgres_errors
from imagery.common.db.projects import audit
from imagery.common.tenancy import Actor
from imagery.processor.ports import AdminJob

SYSTEM = Actor("system:processor")

# What earlier runs saved is kept: a run taken over goes on from there.
_BEGIN = """
UPDATE admin_jobs SET heartbeat_at = now()
 WHERE id = $1 AND state = 'running' AND claim = $2::uuid
RETURNING COALESCE(result, '{}'::jsonb)::text"""

_SAVE = """
UPDATE admin_jobs SET result = $3::jsonb, heartbeat_at = now()
 WHERE id = $1 AND state = 'running' AND claim = $2::uuid"""

# Variants first (they name their blob). A blob still referenced keeps its rows: only an
# image turning READY on it since the block could reference it, and that sees the block.
_FORGET = """
WITH doomed AS (
    SELECT sha256 FROM image_blobs
     WHERE sha256 = ANY($1::text[]) AND reference_count <= 0
       FOR UPDATE),
variants AS (DELETE FROM image_variants WHERE sha256 IN (SELECT sha256 FROM doomed))
DELETE FROM image_blobs WHERE sha256 IN (SELECT sha256 FROM doomed)
RETURNING sha256"""

_FINISH = """
UPDATE admin_jobs
   SET state = 'done', result = $3::jsonb, finished_at = now(), heartbeat_at = now()
 WHERE id = $1 AND state = 'running' AND claim = $2::uuid
RETURNING requested_by"""


class PostgresTakedowns:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @translates_postgres_errors
    async def begin(self, job: AdminJob) -> Mapping[str, Any] | None:
        saved = await self._pool.fetchval(_BEGIN, job.id, job.claim)
        return None if saved is None else dict(json.loads(saved))

    @translates_postgres_errors
    async def save(self, job: AdminJob, state: Mapping[str, Any]) -> bool:
        result = await self._pool.execute(_SAVE, job.id, job.claim, json.dumps(state))
        return bool(result == "UPDATE 1")

    @translates_postgres_errors
    async def still_blocked(self, sha256: str) -> bool:
        found = await self._pool.fetchval("SELECT 1 FROM blocked_content WHERE sha256 = $1", sha256)
        return found is not None

    @translates_postgres_errors
    async def addresses(self, sha256: str) -> list[str]:
        return list(await self._pool.fetchval("SELECT content_addresses($1)", sha256) or [])

    @translates_postgres_errors
    async def with_rows(self, addresses: Collection[str]) -> list[str]:
        rows = await self._pool.fetch(
            "SELECT sha256 FROM image_blobs WHERE sha256 = ANY($1::text[])", list(addresses)
        )
        return [row["sha256"] for row in rows]

    @translates_postgres_errors
    async def forget_content(self, addresses: Collection[str]) -> list[str]:
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(_FORGET, list(addresses))
        return [row["sha256"] for row in rows]

    @translates_postgres_errors
    async def finish(self, job: AdminJob, result: Mapping[str, Any]) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            requested_by = await conn.fetchval(_FINISH, job.id, job.claim, json.dumps(result))
            if requested_by is None:
                return  # taken over meanwhile: the new holder records its own run
            await audit(
                conn,
                SYSTEM,
                "content.takedown",
                f"content/{job.target}",
                project_id=None,
                details={"job": job.id, "requested_by": requested_by, **result},
            )
