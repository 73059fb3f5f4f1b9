"""The processor's writes: a record's terminal state and its blob's reference count, always
in one transaction, guarded on the record still being `processing` (so a duplicate or late
worker can never count twice)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from imagery.common.domain import VariantInfo

_LOCK_PROCESSING = "SELECT 1 FROM image_records WHERE id = $1 AND status = 'processing' FOR UPDATE"

# Waits on a concurrent insert of the same content (unique index) or on a collector holding
# the row, so identical uploads converge on one row and objects are never written while a
# collector is deleting them.
_UPSERT_BLOB = """
INSERT INTO image_blobs (sha256, format, width, height, size_bytes, reference_count)
VALUES ($1, $2, $3, $4, $5, 1)
ON CONFLICT (sha256) DO UPDATE
   SET reference_count = image_blobs.reference_count + 1, updated_at = now()
RETURNING xmax = 0 AS inserted, reference_count"""

_LINK_LIVE_BLOB = """
UPDATE image_blobs SET reference_count = reference_count + 1, updated_at = now()
 WHERE sha256 = $1 AND reference_count > 0
RETURNING format, width, height, size_bytes"""

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


@dataclass(frozen=True, slots=True)
class LinkResult:
    linked: bool
    image: VerifiedImage | None = None
    mismatch: str | None = None  # the known content's real format, when it differs


class _Rollback(Exception):
    def __init__(self, result: LinkResult) -> None:
        self.result = result


async def _mark_ready(
    conn: asyncpg.Connection | PoolConnectionProxy, image_id: str, image: VerifiedImage
) -> None:
    await conn.execute(
        _MARK_READY,
        image_id,
        image.size_bytes,
        image.width,
        image.height,
        image.sha256,
        image.format,
    )


class PostgresOutcomeRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def link_existing(self, image_id: str, sha256: str, declared_format: str) -> LinkResult:
        """Known content: point the record at the live blob (+1), nothing re-processed or
        re-stored. `linked` False when no live blob exists (process the bytes); `mismatch`
        when the known content is not what the upload declared (nothing changed)."""
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                if await conn.fetchval(_LOCK_PROCESSING, image_id) is None:
                    raise NotProcessing(image_id)
                blob = await conn.fetchrow(_LINK_LIVE_BLOB, sha256)
                if blob is None:
                    return LinkResult(linked=False)
                if blob["format"] != declared_format:  # undo the increment
                    raise _Rollback(LinkResult(linked=False, mismatch=blob["format"]))
                image = VerifiedImage(
                    sha256, blob["format"], blob["width"], blob["height"], blob["size_bytes"]
                )
                await _mark_ready(conn, image_id, image)
                return LinkResult(linked=True, image=image)
        except _Rollback as rollback:
            return rollback.result

    async def mark_ready(
        self,
        image_id: str,
        image: VerifiedImage,
        variants: Sequence[VariantInfo] = (),
        write_objects: Callable[[], Awaitable[None]] | None = None,
    ) -> bool:
        """New content: lock the record, insert-or-increment the blob (one statement), write
        the objects when the blob is new or coming back from zero (still holding the row, so
        a collector cannot delete them underneath), store the variants, mark the record
        ready; all in one transaction. Returns whether this call wrote the objects."""
        async with self._pool.acquire() as conn, conn.transaction():
            if await conn.fetchval(_LOCK_PROCESSING, image_id) is None:
                raise NotProcessing(image_id)
            blob = await conn.fetchrow(
                _UPSERT_BLOB,
                image.sha256,
                image.format,
                image.width,
                image.height,
                image.size_bytes,
            )
            assert blob is not None  # INSERT ... ON CONFLICT DO UPDATE always returns the row
            fresh = bool(blob["inserted"]) or blob["reference_count"] == 1
            if fresh and write_objects is not None:
                await write_objects()
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
            await _mark_ready(conn, image_id, image)
        return fresh

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
