"""Operator jobs (migration 0011) and the project purge they run, in Postgres."""

from __future__ import annotations

import asyncpg

from imagery.common.db.pool import translates_postgres_errors
from imagery.common.db.projects import audit, notify
from imagery.common.tenancy import Actor
from imagery.processor.ports import AdminJob, PurgedImage

_ENQUEUE_DUE_PURGES = """
INSERT INTO admin_jobs (kind, target, requested_by)
SELECT 'purge_project', p.id, 'system:retention'
  FROM projects p
 WHERE p.purge_time <= now()
ON CONFLICT DO NOTHING"""

# Queued jobs, and running ones whose processor stopped beating (it died mid-job).
_CLAIM = """
UPDATE admin_jobs j
   SET state = 'running', started_at = COALESCE(j.started_at, now()), heartbeat_at = now(),
       claim = gen_random_uuid()
  FROM (SELECT id FROM admin_jobs
         WHERE state = 'queued'
            OR (state = 'running' AND heartbeat_at <= now() - make_interval(secs => $1))
         ORDER BY created_at LIMIT 1
           FOR UPDATE SKIP LOCKED) due
 WHERE j.id = due.id
RETURNING j.id, j.kind, j.target, j.requested_by, j.claim::text"""

# One batch of a still deleted project's images, removed like DeleteImage removes one: the
# record, its content reference, the feed row for old delivery replicas. No notice per image:
# nobody can read a deleted project's images, and purging ends with one project notice that
# evicts them from every delivery cache.
_PURGE_BATCH = """
WITH gone AS (
    DELETE FROM image_records
     WHERE id IN (SELECT id FROM image_records WHERE project_id = $1
                   ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED)
       AND EXISTS (SELECT 1 FROM projects WHERE id = $1 AND deleted_at IS NOT NULL)
 RETURNING id, status, object_key, sha256),
refs AS (
    UPDATE image_blobs b
       SET reference_count = b.reference_count - c.n, updated_at = now()
      FROM (SELECT sha256, count(*) AS n FROM gone WHERE sha256 IS NOT NULL GROUP BY sha256) c
     WHERE b.sha256 = c.sha256),
feed AS (INSERT INTO image_deletions (image_id) SELECT id FROM gone)
SELECT id, status, object_key FROM gone"""


class PostgresAdminJobs:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @translates_postgres_errors
    async def enqueue_due_purges(self) -> None:
        await self._pool.execute(_ENQUEUE_DUE_PURGES)

    @translates_postgres_errors
    async def claim(self, *, stale_after_seconds: float) -> AdminJob | None:
        row = await self._pool.fetchrow(_CLAIM, stale_after_seconds)
        return None if row is None else AdminJob(row[0], row[1], row[2], row[3], row[4])

    @translates_postgres_errors
    async def progress(self, job: AdminJob, *, done: int, total: int | None = None) -> bool:
        """Record progress (and beat); False when the job is no longer ours to run."""
        result = await self._pool.execute(
            """UPDATE admin_jobs SET done_count = done_count + $2,
                      total = COALESCE($3, total), heartbeat_at = now()
                WHERE id = $1 AND state = 'running' AND claim = $4::uuid""",
            job.id,
            done,
            total,
            job.claim,
        )
        return bool(result == "UPDATE 1")

    @translates_postgres_errors
    async def finish(self, job: AdminJob, *, error: str | None = None) -> None:
        await self._pool.execute(
            """UPDATE admin_jobs SET state = $2, error = $3, finished_at = now(),
                      heartbeat_at = now()
                WHERE id = $1 AND state = 'running' AND claim = $4::uuid""",
            job.id,
            "failed" if error else "done",
            error,
            job.claim,
        )

    @translates_postgres_errors
    async def project_images(self, project_id: str) -> int:
        count: int = await self._pool.fetchval(
            "SELECT count(*) FROM image_records WHERE project_id = $1", project_id
        )
        return count

    @translates_postgres_errors
    async def purge_images(self, project_id: str, limit: int) -> list[PurgedImage]:
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(_PURGE_BATCH, project_id, limit)
        return [PurgedImage(r[0], r[1] in ("ready", "failed"), r[2]) for r in rows]

    @translates_postgres_errors
    async def reprocess_target(self, image_id: str) -> tuple[str, str] | None:
        row = await self._pool.fetchrow(
            "SELECT object_key, content_type FROM image_records"
            " WHERE id = $1 AND status = 'pending'",
            image_id,
        )
        return None if row is None else (row[0], row[1])

    @translates_postgres_errors
    async def reprocess_lost(self, image_id: str) -> bool:
        result = await self._pool.execute(
            """UPDATE image_records
                  SET status = 'failed', failure_reason = 'NOT_UPLOADED', retained_until = NULL,
                      updated_at = now()
                WHERE id = $1 AND status = 'pending'""",
            image_id,
        )
        return bool(result == "UPDATE 1")

    @translates_postgres_errors
    async def forget_project(self, project_id: str, actor: Actor) -> str:
        """Once its images are gone: its credentials and the project row ("purged"), unless
        it was restored ("restored") or images remain ("not empty")."""
        async with self._pool.acquire() as conn, conn.transaction():
            live = await conn.fetchval(
                "SELECT deleted_at IS NULL FROM projects WHERE id = $1 FOR UPDATE", project_id
            )
            if live is None:
                return "purged"  # by an earlier run of this job
            if live:
                return "restored"
            if await conn.fetchval(
                "SELECT 1 FROM image_records WHERE project_id = $1 LIMIT 1", project_id
            ):
                return "not empty"
            await conn.execute("DELETE FROM api_keys WHERE project_id = $1", project_id)
            await conn.execute("DELETE FROM client_identities WHERE project_id = $1", project_id)
            await conn.execute("DELETE FROM projects WHERE id = $1", project_id)
            await audit(
                conn, actor, "project.purge", f"projects/{project_id}", project_id=project_id
            )
            await notify(conn, f"project:{project_id}")
        return "purged"
