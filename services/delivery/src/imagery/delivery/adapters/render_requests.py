"""PostgresRenderRequests: delivery's asks for variants not rendered yet (migration 0019's
`render_requests`), which the processor's renderer takes."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import asyncpg

from imagery.common.db.pool import translates_postgres_errors

# One row per content, version and preset: an image's content is asked for once, however many
# images share it and however often it is asked. A content being collected meanwhile is gone
# from image_blobs (the foreign key): nothing is asked for it.
_ASK = """
INSERT INTO render_requests (sha256, profile_version, preset, project_id, source)
SELECT DISTINCT r.sha256, $3::integer, $4, r.project_id, 'lazy'
  FROM image_records r
 WHERE r.id = ANY($1::text[]) AND r.project_id = $2 AND r.status = 'ready'
   AND r.sha256 IS NOT NULL
ON CONFLICT DO NOTHING"""


class PostgresRenderRequests:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @translates_postgres_errors
    async def request(
        self, project_id: str, image_ids: Sequence[str], version: int, preset: str
    ) -> None:
        # a content collected between the read and the ask has nothing left to render
        with contextlib.suppress(asyncpg.ForeignKeyViolationError):
            await self._pool.execute(_ASK, list(image_ids), project_id, version, preset)
