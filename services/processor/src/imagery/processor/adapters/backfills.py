"""Backfill jobs in Postgres (migration 0019): walking a project's content below a profile
version in address order, asking for its missing renders, keeping the job's place."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from imagery.common.db.backfill import DUE_CONTENT, PROGRESS
from imagery.common.db.pool import translates_postgres_errors
from imagery.common.db.projects import CHANNEL
from imagery.common.presets import Preset
from imagery.common.profiles import VariantProfile, profile_from_json
from imagery.processor.adapters.renders import NOTIFY_IMAGES, move_content
from imagery.processor.ports import AdminJob
from imagery.processor.render_ports import BackfillBatch

_DUE_BATCH = f"{DUE_CONTENT}\n LIMIT $5"

# The old version is what SET reads: a job that ran for another version starts over.
_BEGIN = """
UPDATE admin_jobs
   SET resume_after = CASE WHEN version IS DISTINCT FROM $3 THEN ''
                           ELSE COALESCE(resume_after, '') END,
       version = $3, heartbeat_at = now()
 WHERE id = $1 AND state = 'running' AND claim = $2::uuid
RETURNING resume_after"""

# A backfill ask repeating a lazy one keeps its source (and priority) and gains the job.
_ASK = """
INSERT INTO render_requests (sha256, profile_version, preset, project_id, source, job_id)
SELECT a.sha256, $3, a.preset, $4, 'backfill', $5
  FROM unnest($1::text[], $2::text[]) AS a(sha256, preset)
ON CONFLICT (sha256, profile_version, preset)
DO UPDATE SET job_id = COALESCE(render_requests.job_id, EXCLUDED.job_id)"""

_KEEP_PLACE = """
UPDATE admin_jobs SET resume_after = $3, moved = moved + $4, heartbeat_at = now()
 WHERE id = $1 AND state = 'running' AND claim = $2::uuid
RETURNING 1"""

_RECORD_PROGRESS = """
UPDATE admin_jobs SET total = $3, done_count = $4, heartbeat_at = now()
 WHERE id = $1 AND state = 'running' AND claim = $2::uuid"""


_ATTEMPTS = 3


class _NotOurs(Exception):
    """The job was taken over: roll back what this batch did."""


class PostgresBackfills:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @translates_postgres_errors
    async def current_profile(self, job: AdminJob) -> tuple[bool, VariantProfile | None]:
        row = await self._pool.fetchrow(
            "SELECT deleted_at IS NULL AS live, variant_profile FROM projects WHERE id = $1",
            job.target,
        )
        if row is None or not row["live"]:
            return False, None
        return True, profile_from_json(row["variant_profile"])

    @translates_postgres_errors
    async def begin(self, job: AdminJob, version: int) -> str | None:
        resume: str | None = await self._pool.fetchval(_BEGIN, job.id, job.claim, version)
        return resume

    @translates_postgres_errors
    async def enqueue(
        self, job: AdminJob, *, version: int, after: str, limit: int, presets: Sequence[Preset]
    ) -> BackfillBatch | None:
        for attempt in range(_ATTEMPTS):
            try:
                return await self._enqueue(job, version, after, limit, presets)
            except asyncpg.ForeignKeyViolationError:
                # A content of the batch was collected after it was read (its last image
                # deleted meanwhile): the batch is read again, without it.
                if attempt == _ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    async def _enqueue(
        self, job: AdminJob, version: int, after: str, limit: int, presets: Sequence[Preset]
    ) -> BackfillBatch | None:
        names = [p.name for p in presets]
        wanted = [(p.name, f) for p in presets for f in p.formats]
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                due = await conn.fetch(_DUE_BATCH, job.target, after, version, names, limit)
                asks = [(row["sha256"], name) for row in due for name in row["missing"]]
                await conn.execute(
                    _ASK,
                    [sha for sha, _ in asks],
                    [name for _, name in asks],
                    version,
                    job.target,
                    job.id,
                )
                moved = 0
                for row in due:
                    if not row["missing"] and await move_content(
                        conn, row["sha256"], version, wanted
                    ):
                        await conn.execute(NOTIFY_IMAGES, row["sha256"], CHANNEL)
                        moved += 1
                last = due[-1]["sha256"] if due else after
                if await conn.fetchval(_KEEP_PLACE, job.id, job.claim, last, moved) is None:
                    raise _NotOurs
        except _NotOurs:
            return None
        return BackfillBatch(len(due), len(asks), last)

    @translates_postgres_errors
    async def pending(self, job: AdminJob) -> int:
        count: int = await self._pool.fetchval(
            "SELECT count(*) FROM render_requests WHERE job_id = $1", job.id
        )
        return count

    @translates_postgres_errors
    async def progress(self, job: AdminJob, profile: VariantProfile) -> bool:
        names = [p.name for p in profile.at_ingest]
        row = await self._pool.fetchrow(PROGRESS, job.target, profile.version, names)
        assert row is not None  # an aggregate: always one row
        result = await self._pool.execute(
            _RECORD_PROGRESS, job.id, job.claim, row["total"], row["done"]
        )
        return bool(result == "UPDATE 1")
