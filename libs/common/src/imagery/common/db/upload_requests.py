"""CreateUploadUrl's request ids (migration 0015's `upload_requests`): a new image is saved
with its request id in one transaction, so a request id never names an image that was not
saved, and an image saved for a request id is always found by it; the processor prunes ids
older than the retention."""

from __future__ import annotations

import asyncpg

from imagery.common.db.images import PostgresImageRepository
from imagery.common.db.pool import translates_postgres_errors
from imagery.common.domain import ImageRecord
from imagery.common.errors import DependencyUnavailable
from imagery.common.quotas import UNLIMITED, Quotas
from imagery.common.request_ids import REQUEST_ID_RETENTION_SECONDS, UsedRequestId

# Take the request id for a new image: a new row, or one past the retention replaced. A row
# a concurrent call inserted first makes this wait for that call's commit (the primary key),
# then yields nothing: the id is that call's. A kept row is locked until the transaction ends.
_CLAIM = """
INSERT INTO upload_requests AS q (project_id, request_id, fingerprint, image_id)
VALUES ($1, $2, $3, $4)
ON CONFLICT (project_id, request_id) DO UPDATE
   SET fingerprint = EXCLUDED.fingerprint, image_id = EXCLUDED.image_id, created_at = now()
 WHERE q.created_at <= now() - make_interval(secs => $5)
RETURNING true"""
# A new statement sees what committed before it began (READ COMMITTED): the winner's row,
# and its image's upload key unless the image has been deleted since.
_FIND = """
SELECT q.fingerprint, q.image_id, r.object_key
  FROM upload_requests q
  LEFT JOIN image_records r ON r.id = q.image_id AND r.project_id = q.project_id
 WHERE q.project_id = $1 AND q.request_id = $2
   AND q.created_at > now() - make_interval(secs => $3)"""
_PRUNE = "DELETE FROM upload_requests WHERE created_at <= now() - make_interval(secs => $1)"


class PostgresUploadRequests:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._images = PostgresImageRepository(pool)

    @translates_postgres_errors
    async def save_once(
        self,
        record: ImageRecord,
        request_id: str,
        fingerprint: str,
        *,
        principal: str,
        quotas: Quotas = UNLIMITED,
    ) -> UsedRequestId | None:
        """Save `record` as `PostgresImageRepository.save` does, together with `request_id`
        (and the call's `fingerprint`) for it, and return None; unless the project used
        `request_id` within the retention: then save nothing and return that use."""

        async def taken(conn: asyncpg.pool.PoolConnectionProxy) -> UsedRequestId | None:
            key, kept = (record.project_id, request_id), REQUEST_ID_RETENTION_SECONDS
            for _ in range(3):
                if await conn.fetchval(_CLAIM, *key, fingerprint, record.id, kept):
                    return None
                row = await conn.fetchrow(_FIND, *key, kept)
                if row is not None:
                    return UsedRequestId(row["fingerprint"], row["image_id"], row["object_key"])
                # Only if the kept row went between the two statements, which the claim's
                # lock on it forbids: take the id again rather than trust that.
            raise DependencyUnavailable(
                "The request id kept changing while this call was admitted: retry the call."
            )

        return await self._images.save_unless(
            record, principal=principal, quotas=quotas, taken=taken
        )

    @translates_postgres_errors
    async def prune(self) -> int:
        """Forget request ids past the retention; returns how many went."""
        result = await self._pool.execute(_PRUNE, REQUEST_ID_RETENTION_SECONDS)
        return int(result.split()[-1])
