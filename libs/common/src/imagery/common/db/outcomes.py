"""The processor's writes: a record's terminal state and its blob's reference count, always
in one transaction, guarded on the record still being `processing` (so a duplicate or late
worker can never count twice)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from imagery.common.domain import VariantInfo

_UPSERT_BLOB = """
INSERT INTO image_blobs (sha256, format, width, height, size_bytes, reference_count)
VALUES ($1, $2, $3, $4, $5, 1)
ON CONFLICT (sha256) DO UPDATE
   SET reference_count = image_blobs.reference_count + 1, updated_at = now()
RETURNING xmax = 0"""

_INSERT_VARIANT = """
INSERT INTO image_variants
       (sha256, name, format, content_type, width, height, size_bytes, object_key)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT DO NOTHING"""

_MARK_READY = """
UPDATE image_records
   SET status = 'ready', size_bytes = $2, width = $3, height = $4, sha256 = $5,
       detected_format = $6, failure_reason = NULL, updated_at = now()
 WHERE id = $1 AND status = 'processing'"""


@dataclass(frozen=True, slots=True)
class VerifiedImage:
    sha256: str
    format: str
    width: int
    height: int
    size_bytes: int


class NotProcessing(RuntimeError):
    """The record is no longer `processing`: another worker finished it or it was deleted."""


class PostgresOutcomeRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def blob_exists(self, sha256: str) -> bool:
        """Known content with live references: its objects exist and nothing is re-stored."""
        found = await self._pool.fetchval(
            "SELECT 1 FROM image_blobs WHERE sha256 = $1 AND reference_count > 0", sha256
        )
        return found is not None

    async def mark_ready(
        self, image_id: str, image: VerifiedImage, variants: Sequence[VariantInfo] = ()
    ) -> bool:
        """Insert-or-increment the blob (one statement, so concurrent identical uploads
        converge on one row) and mark the record ready. Returns whether the blob is new."""
        async with self._pool.acquire() as conn, conn.transaction():
            inserted = await conn.fetchval(
                _UPSERT_BLOB,
                image.sha256,
                image.format,
                image.width,
                image.height,
                image.size_bytes,
            )
            if variants:
                await conn.executemany(
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
                        )
                        for v in variants
                    ],
                )
            updated = await conn.execute(
                _MARK_READY,
                image_id,
                image.size_bytes,
                image.width,
                image.height,
                image.sha256,
                image.format,
            )
            if updated != "UPDATE 1":
                raise NotProcessing(image_id)
        return bool(inserted)

    async def mark_failed(
        self,
        image_id: str,
        reason: str,
        *,
        size_bytes: int | None = None,
        detected_format: str | None = None,
    ) -> bool:
        result = await self._pool.execute(
            """UPDATE image_records
                  SET status = 'failed', failure_reason = $2, size_bytes = COALESCE($3, size_bytes),
                      detected_format = $4, updated_at = now()
                WHERE id = $1 AND status = 'processing'""",
            image_id,
            reason,
            size_bytes,
            detected_format,
        )
        return bool(result == "UPDATE 1")

    async def release_claim(self, image_id: str) -> None:
        """Give a claimed record back (shutdown, transient error): processing -> pending."""
        await self._pool.execute(
            "UPDATE image_records SET status = 'pending', updated_at = now()"
            " WHERE id = $1 AND status = 'processing'",
            image_id,
        )
