"""Deleting content nobody refers to any more: a blob whose reference_count reached zero
loses its objects (original and variants), then its row. The row is locked throughout, so
an upload of the same content waits and then starts afresh; an object deletion that fails
rolls back and leaves the row for the next sweep, so nothing is forgotten."""

from __future__ import annotations

import logging
from typing import Protocol

import asyncpg

from imagery.common.errors import ImageryError

log = logging.getLogger(__name__)


class Deleter(Protocol):
    async def delete(self, key: str) -> None: ...


def original_key(sha256: str) -> str:
    return f"originals/{sha256}"


class BlobCollector:
    def __init__(self, pool: asyncpg.Pool, objects: Deleter) -> None:
        self._pool = pool
        self._objects = objects

    async def collect(self, sha256: str) -> bool:
        """Delete the blob's objects and row if it is unreferenced; True when it went."""
        async with self._pool.acquire() as conn, conn.transaction():
            count = await conn.fetchval(
                "SELECT reference_count FROM image_blobs WHERE sha256 = $1 FOR UPDATE", sha256
            )
            if count is None or count > 0:
                return False
            keys = [
                r[0]
                for r in await conn.fetch(
                    "SELECT object_key FROM image_variants WHERE sha256 = $1", sha256
                )
            ]
            for key in [*keys, original_key(sha256)]:
                await self._objects.delete(key)
            await conn.execute("DELETE FROM image_blobs WHERE sha256 = $1", sha256)
        log.info("unreferenced content deleted", extra={"sha256": sha256, "objects": len(keys) + 1})
        return True

    async def sweep(self, limit: int = 100) -> int:
        """Collect unreferenced blobs left behind (a failed deletion, a crash); returns how many."""
        rows = await self._pool.fetch(
            "SELECT sha256 FROM image_blobs WHERE reference_count = 0 ORDER BY updated_at LIMIT $1",
            limit,
        )
        collected = 0
        for row in rows:
            try:
                collected += await self.collect(row[0])
            except ImageryError as exc:
                log.warning(
                    "could not delete unreferenced content; will retry",
                    extra={"sha256": row[0], "error": str(exc)},
                )
        return collected
