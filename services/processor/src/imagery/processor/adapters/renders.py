"""Renders after ingest in Postgres (migration 0019): asks claimed with SKIP LOCKED, answered
in one transaction with the variant rows, the content's version and a change-bus notice."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from imagery.common.db.pool import translates_postgres_errors
from imagery.common.db.projects import CHANNEL
from imagery.common.domain import VariantInfo
from imagery.common.profiles import profile_from_json
from imagery.processor.adapters.postgres import _INSERT_VARIANT
from imagery.processor.render_ports import RenderRequest, RenderSource

_CLAIM = """
UPDATE render_requests q SET claimed_at = now(), attempts = q.attempts + 1
  FROM (SELECT sha256, profile_version, preset FROM render_requests
         WHERE claimed_at IS NULL OR claimed_at <= now() - make_interval(secs => $1)
         ORDER BY (source = 'backfill'), requested_at
         LIMIT 1 FOR UPDATE SKIP LOCKED) due
 WHERE q.sha256 = due.sha256 AND q.profile_version = due.profile_version
   AND q.preset = due.preset
RETURNING q.sha256, q.profile_version, q.preset, q.project_id, q.source, q.attempts,
          q.claimed_at"""

_SOURCE = """
SELECT b.format, p.variant_profile
  FROM image_blobs b, projects p
 WHERE b.sha256 = $1 AND b.stored_at IS NOT NULL AND b.collecting_since IS NULL
   AND b.reference_count > 0 AND p.id = $2 AND p.deleted_at IS NULL"""

_COVERED = """
SELECT EXISTS (SELECT 1 FROM image_variants
                WHERE sha256 = $1 AND profile_version = $2 AND name = $3)
    OR ($2 <> $4 AND EXISTS (SELECT 1 FROM render_requests
                              WHERE sha256 = $1 AND profile_version = $2 AND preset = $3))"""

# An ask of an older version becomes the current version's, one row per rendering: only asks
# at the current version are ever rendered, and each is claimed by one renderer at a time.
_MOVE = """
WITH old AS (DELETE FROM render_requests
              WHERE sha256 = $1 AND profile_version = $2 AND preset = $3
          RETURNING project_id, source, job_id, requested_at)
INSERT INTO render_requests (sha256, profile_version, preset, project_id, source, job_id,
                             requested_at)
SELECT $1, $4, $3, project_id, source, job_id, requested_at FROM old
ON CONFLICT DO NOTHING"""

_DROP = """
DELETE FROM render_requests WHERE sha256 = $1 AND profile_version = $2 AND preset = $3
RETURNING job_id"""

# A claim is retaken once it is as old as the stale-claim time: this one is dated back.
_RETRY_LATER = """
UPDATE render_requests SET claimed_at = now() - make_interval(secs => $5)
 WHERE sha256 = $1 AND profile_version = $2 AND preset = $3 AND claimed_at = $4"""

_RELEASE = """
UPDATE render_requests SET claimed_at = NULL, attempts = attempts - 1
 WHERE sha256 = $1 AND profile_version = $2 AND preset = $3 AND claimed_at = $4"""

# Locked against the collector (it skips locked rows) and against another render of the same
# content (their version moves happen one after the other). NO KEY UPDATE: inserting an ask
# (its foreign key takes KEY SHARE) does not wait for it.
# Content no image references any more (deleted, or taken down) gets no new variant.
_LOCK_CONTENT = """
SELECT 1 FROM image_blobs
 WHERE sha256 = $1 AND stored_at IS NOT NULL AND collecting_since IS NULL
   AND reference_count > 0
   FOR NO KEY UPDATE"""

_ANSWERED = """
DELETE FROM render_requests
 WHERE sha256 = $1 AND preset = $2 AND profile_version = ANY($3::int[])
RETURNING job_id"""

# Every (preset, format) the version renders at ingest is there: the content is at it. A
# preset's "jpeg" is the widely supported fallback, which is PNG for an image with alpha.
MOVE_CONTENT = """
UPDATE image_blobs SET profile_version = $2, updated_at = now()
 WHERE sha256 = $1 AND profile_version < $2
   AND NOT EXISTS (
       SELECT 1 FROM unnest($3::text[], $4::text[]) AS w(name, format)
        WHERE NOT EXISTS (
              SELECT 1 FROM image_variants v
               WHERE v.sha256 = $1 AND v.profile_version = $2 AND v.name = w.name
                 AND (v.format = w.format OR (w.format = 'jpeg' AND v.format = 'png'))))
RETURNING 1"""

# What every image on the content serves changed: delivery caches drop their targets.
NOTIFY_IMAGES = "SELECT pg_notify($2, 'image:' || id) FROM image_records WHERE sha256 = $1"

_COUNT_FOR_JOBS = """
UPDATE admin_jobs SET made = made + $2, failed = failed + $3, moved = moved + $4
 WHERE id = ANY($1::bigint[])"""


class PostgresRenderRequests:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @translates_postgres_errors
    async def claim(self, *, stale_after_seconds: float) -> RenderRequest | None:
        row = await self._pool.fetchrow(_CLAIM, stale_after_seconds)
        return None if row is None else RenderRequest(*row)

    @translates_postgres_errors
    async def source(self, request: RenderRequest) -> RenderSource | None:
        row = await self._pool.fetchrow(_SOURCE, request.sha256, request.project_id)
        if row is None:
            return None
        return RenderSource(row["format"], profile_from_json(row["variant_profile"]))

    @translates_postgres_errors
    async def covered(self, request: RenderRequest, version: int) -> bool:
        return bool(
            await self._pool.fetchval(
                _COVERED, request.sha256, version, request.preset, request.version
            )
        )

    @translates_postgres_errors
    async def complete(
        self,
        request: RenderRequest,
        version: int,
        variants: Sequence[VariantInfo],
        wanted: Sequence[tuple[str, str]],
    ) -> bool | None:
        async with self._pool.acquire() as conn, conn.transaction():
            if await conn.fetchval(_LOCK_CONTENT, request.sha256) is None:
                return None
            await conn.executemany(
                _INSERT_VARIANT,
                [
                    (
                        request.sha256,
                        v.name,
                        v.format,
                        v.content_type,
                        v.width,
                        v.height,
                        v.size_bytes,
                        v.key,
                        v.profile_version,
                        v.over_budget,
                    )
                    for v in variants
                ],
            )
            jobs = await conn.fetch(
                _ANSWERED, request.sha256, request.preset, sorted({request.version, version})
            )
            moved = await move_content(conn, request.sha256, version, wanted)
            await conn.execute(NOTIFY_IMAGES, request.sha256, CHANNEL)
            await _count(conn, jobs, made=1, moved=int(moved))
        return moved

    @translates_postgres_errors
    @translates_postgres_errors
    async def move(self, request: RenderRequest, version: int) -> None:
        await self._pool.execute(_MOVE, request.sha256, request.version, request.preset, version)

    @translates_postgres_errors
    async def drop(self, request: RenderRequest, *, failed: bool) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            jobs = await conn.fetch(
                _DROP,
                request.sha256,
                request.version,
                request.preset,
            )
            if failed:
                await _count(conn, jobs, failed=1)

    @translates_postgres_errors
    async def retry_later(
        self, request: RenderRequest, *, after_seconds: float, stale_after_seconds: float
    ) -> None:
        await self._pool.execute(
            _RETRY_LATER,
            request.sha256,
            request.version,
            request.preset,
            request.claimed_at,
            max(0.0, stale_after_seconds - after_seconds),
        )

    @translates_postgres_errors
    async def release(self, request: RenderRequest) -> None:
        await self._pool.execute(
            _RELEASE,
            request.sha256,
            request.version,
            request.preset,
            request.claimed_at,
        )


async def move_content(
    conn: asyncpg.Connection | PoolConnectionProxy,
    sha256: str,
    version: int,
    wanted: Sequence[tuple[str, str]],
) -> bool:
    """Move the content to `version` if it has every (preset, format) of `wanted` there."""
    names, formats = [n for n, _ in wanted], [f for _, f in wanted]
    return await conn.fetchval(MOVE_CONTENT, sha256, version, names, formats) is not None


async def _count(
    conn: asyncpg.Connection | PoolConnectionProxy,
    jobs: Sequence[asyncpg.Record],
    *,
    made: int = 0,
    failed: int = 0,
    moved: int = 0,
) -> None:
    """Count an answered ask for the backfill jobs that asked for it."""
    ids = sorted({row["job_id"] for row in jobs if row["job_id"] is not None})
    if ids:
        await conn.execute(_COUNT_FOR_JOBS, ids, made, failed, moved)
