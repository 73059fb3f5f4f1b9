"""Reconcile jobs in Postgres (migration 0022): the options `imagery-admin reconcile` queued
with the job, its progress, its result and the audit event of a run that changed things."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping

import asyncpg

from imagery.common.db.pool import translates_postgres_errors
from imagery.common.db.projects import audit
from imagery.common.tenancy import Actor
from imagery.processor.ports import AdminJob, ReconcileOptions

SYSTEM = Actor("system:processor")

# Progress starts again at every claim: a job taken over runs its whole pass again.
_BEGIN = """
UPDATE admin_jobs
   SET done_count = 0, heartbeat_at = now(), result = NULL,
       total = (SELECT count(*) FROM image_blobs
                 WHERE reference_count > 0 AND stored_at IS NOT NULL
                   AND collecting_since IS NULL)
 WHERE id = $1 AND state = 'running' AND claim = $2::uuid
RETURNING options::text"""

_PROGRESS = """
UPDATE admin_jobs SET done_count = $3, heartbeat_at = now()
 WHERE id = $1 AND state = 'running' AND claim = $2::uuid"""

_FINISH = """
UPDATE admin_jobs
   SET state = 'done', result = $3::jsonb, finished_at = now(), heartbeat_at = now()
 WHERE id = $1 AND state = 'running' AND claim = $2::uuid
RETURNING requested_by"""

_READY_IMAGES = """
SELECT count(*) OVER () AS images, id FROM image_records
 WHERE sha256 = ANY($1::text[]) AND status = 'ready'
 ORDER BY id LIMIT $2"""


class PostgresReconcileJobs:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @translates_postgres_errors
    async def begin(self, job: AdminJob) -> ReconcileOptions | None:
        row = await self._pool.fetchrow(_BEGIN, job.id, job.claim)
        if row is None:
            return None
        options = json.loads(row[0] or "{}")
        return ReconcileOptions(
            dry_run=bool(options.get("dry_run", True)),
            remove_orphans=bool(options.get("remove_orphans", False)),
        )

    @translates_postgres_errors
    async def progress(self, job: AdminJob, *, done: int) -> bool:
        result = await self._pool.execute(_PROGRESS, job.id, job.claim, done)
        return bool(result == "UPDATE 1")

    @translates_postgres_errors
    async def ready_images_of(
        self, sha256s: Collection[str], *, limit: int
    ) -> tuple[int, list[str]]:
        if not sha256s:
            return 0, []
        rows = await self._pool.fetch(_READY_IMAGES, list(sha256s), limit)
        return (rows[0]["images"] if rows else 0), [row["id"] for row in rows]

    @translates_postgres_errors
    async def finish(self, job: AdminJob, result: Mapping[str, object]) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            requested_by = await conn.fetchval(_FINISH, job.id, job.claim, json.dumps(result))
            if requested_by is None or result.get("dry_run"):
                return  # not ours any more; or a dry run, which changed nothing
            await audit(
                conn,
                SYSTEM,
                "bucket.reconcile",
                "bucket",
                project_id=None,
                details={
                    "job": job.id,
                    "requested_by": requested_by,
                    **{
                        name: finding["count"]
                        for name, finding in result.items()
                        if isinstance(finding, Mapping) and "count" in finding
                    },
                },
            )
