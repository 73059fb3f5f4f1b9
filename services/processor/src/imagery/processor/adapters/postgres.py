"""The processor's writes in Postgres: a record's terminal state and its content's reference
count in one transaction (a unit of work the use case drives), and content collection."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Collection, Sequence
from datetime import datetime

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from imagery.common.db.pool import postgres_errors, translates_postgres_errors
from imagery.common.domain import VariantInfo
from imagery.common.profiles import profile_from_json
from imagery.common.storage_keys import GLOBAL_SCOPE, RETAINABLE_REASONS, original_key
from imagery.processor.ports import (
    LinkResult,
    StoredContent,
    UnreferencedContent,
    VerifiedImage,
)

_LOCK_PROCESSING = "SELECT 1 FROM image_records WHERE id = $1 AND status = 'processing' FOR UPDATE"

# A takedown (`imagery-admin block`) takes this lock exclusively for the bytes while it blocks
# them and their READY images: an image turning READY on them either commits first (and is
# blocked with the others) or sees the block. Two statements: a statement's snapshot is taken
# when it starts, so a check in the locking statement would not see a block that committed
# while it waited.
_CONTENT_LOCK = "SELECT pg_advisory_xact_lock_shared(hashtextextended('imagery:content:' || $1, 0))"
_BLOCKED = "SELECT EXISTS (SELECT 1 FROM blocked_content WHERE sha256 = $1)"

_LINK_STORED = """
UPDATE image_blobs SET reference_count = reference_count + 1, updated_at = now()
 WHERE sha256 = $1 AND format = $2 AND stored_at IS NOT NULL AND collecting_since IS NULL
RETURNING width, height, size_bytes"""

_KNOWN = (
    "SELECT format, collecting_since IS NOT NULL AS collecting FROM image_blobs WHERE sha256 = $1"
)

# Referenced, stored content with its variants' keys and versions (in one order), and the
# profiles of versions above 0 of the project that owns it (content addresses are scoped to a
# project, so any of its records names that project).
_STORED_CONTENT = """
SELECT b.sha256, b.format, b.updated_at,
       ARRAY(SELECT object_key FROM image_variants v WHERE v.sha256 = b.sha256
              ORDER BY object_key) AS keys,
       ARRAY(SELECT profile_version FROM image_variants v WHERE v.sha256 = b.sha256
              ORDER BY object_key) AS versions,
       ARRAY(SELECT vp.version FROM variant_profiles vp
              WHERE vp.project_id = o.project_id AND vp.version IN (SELECT profile_version
                    FROM image_variants v WHERE v.sha256 = b.sha256)
              ORDER BY vp.version) AS profile_versions,
       ARRAY(SELECT vp.profile::text FROM variant_profiles vp
              WHERE vp.project_id = o.project_id AND vp.version IN (SELECT profile_version
                    FROM image_variants v WHERE v.sha256 = b.sha256)
              ORDER BY vp.version) AS profiles
  FROM image_blobs b
  LEFT JOIN LATERAL (SELECT r.project_id FROM image_records r
                      WHERE r.sha256 = b.sha256 LIMIT 1) o ON true
 WHERE b.reference_count > 0 AND b.stored_at IS NOT NULL
   AND b.collecting_since IS NULL AND b.sha256 > $1
 ORDER BY b.sha256 LIMIT $2"""

_STORED_KEYS = """
SELECT ARRAY(SELECT object_key FROM image_variants v WHERE v.sha256 = b.sha256) AS keys
  FROM image_blobs b
 WHERE b.sha256 = $1 AND b.stored_at IS NOT NULL AND b.collecting_since IS NULL"""

# A conflicting row is refreshed (its grace starts again) unless a collector holds it; waits
# on a concurrent reservation of the same content, so both converge on one row. The first
# insights kept stay: the same bytes give the same values.
_RESERVE = """
INSERT INTO image_blobs (sha256, format, width, height, size_bytes, reference_count,
                         profile_version, thumbhash, blurhash, average_color, dominant_colors,
                         phash)
VALUES ($1, $2, $3, $4, $5, 0, $6, $7, $8, $9, $10::jsonb, $11)
ON CONFLICT (sha256) DO UPDATE
   SET updated_at = now(), profile_version = GREATEST(image_blobs.profile_version, $6),
       thumbhash = COALESCE(image_blobs.thumbhash, $7),
       blurhash = COALESCE(image_blobs.blurhash, $8),
       average_color = COALESCE(image_blobs.average_color, $9),
       dominant_colors = COALESCE(image_blobs.dominant_colors, $10::jsonb),
       phash = COALESCE(image_blobs.phash, $11)
 WHERE image_blobs.collecting_since IS NULL
RETURNING reservation::text"""

_INSERT_VARIANT = """
INSERT INTO image_variants
       (sha256, name, format, content_type, width, height, size_bytes, object_key,
        profile_version, over_budget)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT DO NOTHING"""

_REFERENCE = """
UPDATE image_blobs
   SET reference_count = reference_count + 1, stored_at = COALESCE(stored_at, now()),
       updated_at = now()
 WHERE sha256 = $1 AND collecting_since IS NULL
   AND (stored_at IS NOT NULL OR reservation = $2::uuid)
RETURNING 1"""

_MARK_READY = """
UPDATE image_records
   SET status = 'ready', size_bytes = $2, width = $3, height = $4, sha256 = $5,
       detected_format = $6, failure_reason = NULL, digest = $7, updated_at = now(),
       phash = (SELECT phash FROM image_blobs WHERE sha256 = $5)
 WHERE id = $1 AND status = 'processing'"""

_CLAIM_UNREFERENCED = """
UPDATE image_blobs b SET collecting_since = now(), updated_at = now()
  FROM (SELECT sha256 FROM image_blobs
         WHERE reference_count = 0
           AND CASE WHEN collecting_since IS NOT NULL
                    THEN collecting_since <= now() - make_interval(secs => $4)
                    WHEN stored_at IS NOT NULL
                    THEN updated_at <= now() - make_interval(secs => $1)
                    ELSE updated_at <= now() - make_interval(secs => $3) END
         ORDER BY updated_at LIMIT $2
           FOR UPDATE SKIP LOCKED) due
 WHERE b.sha256 = due.sha256
RETURNING b.sha256, b.collecting_since,
          ARRAY(SELECT object_key FROM image_variants v WHERE v.sha256 = b.sha256) AS keys"""

_FORGET = "DELETE FROM image_blobs WHERE sha256 = $1 AND collecting_since = $2"

_STILL_CLAIMED = """
SELECT 1 FROM image_blobs
 WHERE sha256 = $1 AND collecting_since = $2
   AND collecting_since > now() - make_interval(secs => $3)"""


# The primary key, and nothing else: the consumer asks this before every batch it admits.
_PROJECTS_TO_PROCESS = """
SELECT id, project_id FROM image_records
 WHERE id = ANY($1::text[]) AND status IN ('pending', 'processing')"""


def _insight_values(image: VerifiedImage) -> tuple[object, ...]:
    found = image.insights
    if found is None:
        return (None, None, None, None, None)
    colors = [{"color": color, "fraction": share} for color, share in found.dominant_colors]
    return (
        found.thumbhash,
        found.blurhash,
        found.average_color or None,
        json.dumps(colors),
        found.phash,
    )


class PostgresUploadProjects:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @translates_postgres_errors
    async def projects_of(self, image_ids: Collection[str]) -> dict[str, str]:
        rows = await self._pool.fetch(_PROJECTS_TO_PROCESS, list(image_ids))
        return {row["id"]: row["project_id"] for row in rows}


class PostgresOutcomeWrites:
    """One transaction's writes, on the connection the unit of work holds."""

    def __init__(self, conn: asyncpg.Connection | PoolConnectionProxy) -> None:
        self._conn = conn

    @translates_postgres_errors
    async def lock_processing(self, image_id: str) -> bool:
        return await self._conn.fetchval(_LOCK_PROCESSING, image_id) is not None

    @translates_postgres_errors
    async def content_blocked(self, digest: str) -> bool:
        await self._conn.execute(_CONTENT_LOCK, digest)
        return bool(await self._conn.fetchval(_BLOCKED, digest))

    @translates_postgres_errors
    async def link_stored_content(self, sha256: str, declared_format: str) -> LinkResult:
        row = await self._conn.fetchrow(_LINK_STORED, sha256, declared_format)
        if row is not None:
            image = VerifiedImage(
                sha256, declared_format, row["width"], row["height"], row["size_bytes"]
            )
            return LinkResult(linked=True, image=image)
        known = await self._conn.fetchrow(_KNOWN, sha256)
        if known is None:
            return LinkResult(linked=False)
        if known["collecting"]:  # whatever the row says, it is on its way out
            return LinkResult(linked=False, collecting=True)
        if known["format"] != declared_format:
            return LinkResult(linked=False, mismatch=known["format"])
        return LinkResult(linked=False)

    @translates_postgres_errors
    async def reserve_content(
        self, image: VerifiedImage, variants: Sequence[VariantInfo]
    ) -> str | None:
        reservation: str | None = await self._conn.fetchval(
            _RESERVE,
            image.sha256,
            image.format,
            image.width,
            image.height,
            image.size_bytes,
            image.profile_version,
            *_insight_values(image),
        )
        if reservation is None:
            return None
        if variants:
            await self._conn.executemany(
                _INSERT_VARIANT,
                [
                    (
                        image.sha256,
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
        return reservation

    @translates_postgres_errors
    async def reference_content(self, sha256: str, reservation: str) -> bool:
        return await self._conn.fetchval(_REFERENCE, sha256, reservation) is not None

    @translates_postgres_errors
    async def mark_ready(self, image_id: str, image: VerifiedImage) -> None:
        await self._conn.execute(
            _MARK_READY,
            image_id,
            image.size_bytes,
            image.width,
            image.height,
            image.sha256,
            image.format,
            image.digest,
        )


class PostgresOutcomes:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @contextlib.asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[PostgresOutcomeWrites]:
        with postgres_errors():
            async with self._pool.acquire() as conn, conn.transaction():
                yield PostgresOutcomeWrites(conn)

    @translates_postgres_errors
    async def mark_failed(
        self,
        image_id: str,
        reason: str,
        *,
        size_bytes: int | None = None,
        retained_days: int | None = None,
    ) -> bool:
        result = await self._pool.execute(
            """UPDATE image_records
                  SET status = 'failed', failure_reason = $2, size_bytes = COALESCE($3, size_bytes),
                      retained_until = now() + make_interval(days => $4::int), updated_at = now()
                WHERE id = $1 AND status = 'processing'""",
            image_id,
            reason,
            size_bytes,
            retained_days,
        )
        return bool(result == "UPDATE 1")

    @translates_postgres_errors
    async def is_blocked(self, digest: str) -> bool:
        return bool(await self._pool.fetchval(_BLOCKED, digest))

    @translates_postgres_errors
    async def stored_keys(self, sha256: str) -> tuple[str, ...] | None:
        row = await self._pool.fetchrow(_STORED_KEYS, sha256)
        if row is None:
            return None
        return (*row["keys"], original_key(GLOBAL_SCOPE, sha256))

    @translates_postgres_errors
    async def start_attempt(self, image_id: str) -> int | None:
        attempts: int | None = await self._pool.fetchval(
            "UPDATE image_records SET attempts = attempts + 1, updated_at = now()"
            " WHERE id = $1 AND status = 'processing' RETURNING attempts",
            image_id,
        )
        return attempts

    @translates_postgres_errors
    async def release_claim(self, image_id: str) -> None:
        await self._pool.execute(
            "UPDATE image_records SET status = 'pending', updated_at = now()"
            " WHERE id = $1 AND status = 'processing'",
            image_id,
        )


class PostgresContentStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @translates_postgres_errors
    async def claim_unreferenced(
        self,
        *,
        grace_seconds: float,
        reservation_lease_seconds: float,
        claim_lifetime_seconds: float,
        limit: int,
    ) -> list[UnreferencedContent]:
        rows = await self._pool.fetch(
            _CLAIM_UNREFERENCED,
            grace_seconds,
            limit,
            reservation_lease_seconds,
            claim_lifetime_seconds,
        )
        return [
            UnreferencedContent(
                sha256,
                claimed_at,
                (*keys, original_key(GLOBAL_SCOPE, sha256)),
            )
            for sha256, claimed_at, keys in rows
        ]

    @translates_postgres_errors
    async def still_claimed(self, content: UnreferencedContent, *, within_seconds: float) -> bool:
        row = await self._pool.fetchval(
            _STILL_CLAIMED, content.sha256, content.claimed_at, within_seconds
        )
        return row is not None

    @translates_postgres_errors
    async def forget(self, content: UnreferencedContent) -> bool:
        result = await self._pool.execute(_FORGET, content.sha256, content.claimed_at)
        return bool(result == "DELETE 1")


class PostgresContentInventory:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @translates_postgres_errors
    async def known_content(self, sha256s: Collection[str]) -> set[str]:
        rows = await self._pool.fetch(
            "SELECT sha256 FROM image_blobs WHERE sha256 = ANY($1::text[])", list(sha256s)
        )
        return {row[0] for row in rows}

    @translates_postgres_errors
    async def retaining_images(self, image_ids: Collection[str]) -> set[str]:
        rows = await self._pool.fetch(
            """SELECT id FROM image_records
                WHERE id = ANY($1::text[])
                  AND (status IN ('pending', 'processing')
                       OR (status = 'failed' AND failure_reason = ANY($2::text[])))""",
            list(image_ids),
            sorted(RETAINABLE_REASONS),
        )
        return {row[0] for row in rows}

    @translates_postgres_errors
    async def known_images(self, image_ids: Collection[str]) -> set[str]:
        rows = await self._pool.fetch(
            "SELECT id FROM image_records WHERE id = ANY($1::text[])", list(image_ids)
        )
        return {row[0] for row in rows}

    @translates_postgres_errors
    async def stored_content(self, *, after: str | None, limit: int) -> list[StoredContent]:
        rows = await self._pool.fetch(_STORED_CONTENT, after or "", limit)
        return [
            StoredContent(
                row["sha256"],
                row["format"],
                tuple(row["keys"]),
                row["updated_at"],
                tuple(row["versions"]),
                {
                    int(version): profile
                    for version, raw in zip(row["profile_versions"], row["profiles"], strict=True)
                    if (profile := profile_from_json(raw)) is not None
                },
            )
            for row in rows
        ]

    @translates_postgres_errors
    async def mark_lost(self, content: StoredContent) -> bool:
        async with self._pool.acquire() as conn, conn.transaction():
            marked = await conn.fetchval(
                "UPDATE image_blobs SET stored_at = NULL, updated_at = now()"
                " WHERE sha256 = $1 AND updated_at = $2 AND collecting_since IS NULL"
                " RETURNING 1",
                content.sha256,
                content.updated_at,
            )
            if marked is None:
                return False
            await conn.execute("DELETE FROM image_variants WHERE sha256 = $1", content.sha256)
        return True

    @translates_postgres_errors
    async def drop_variants(self, sha256: str, keys: Collection[str]) -> None:
        await self._pool.execute(
            "DELETE FROM image_variants WHERE sha256 = $1 AND object_key = ANY($2::text[])",
            sha256,
            list(keys),
        )

    @translates_postgres_errors
    async def claim_orphans(self, sha256: str) -> datetime | None:
        claimed: datetime | None = await self._pool.fetchval(
            """INSERT INTO image_blobs
                      (sha256, format, width, height, size_bytes, reference_count,
                       collecting_since)
               VALUES ($1, 'orphan', 1, 1, 1, 0, now())
               ON CONFLICT (sha256) DO NOTHING
               RETURNING collecting_since""",
            sha256,
        )
        return claimed

    @translates_postgres_errors
    async def release_orphans(self, sha256: str, claimed_at: datetime) -> None:
        await self._pool.execute(_FORGET, sha256, claimed_at)
