"""PostgresImageStates: what DeliveryService's WatchImage reads, the current records of many
watched images (of any projects) in one round trip."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from imagery.common.db.images import record_from_row, select_records
from imagery.common.db.pool import translates_postgres_errors
from imagery.common.domain import ImageRecord

# Primary-key probes for the (image, project) pairs; a deleted project's images are gone for
# its watchers (its keys stop working at once, and a purge follows).
_READ_STATES = f"""{select_records()}
  JOIN projects p ON p.id = r.project_id AND p.deleted_at IS NULL
 WHERE (r.id, r.project_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))"""


class PostgresImageStates:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @translates_postgres_errors
    async def read_states(
        self, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], ImageRecord]:
        rows = await self._pool.fetch(
            _READ_STATES, [image for _, image in keys], [project for project, _ in keys]
        )
        records = (record_from_row(row) for row in rows)
        return {(r.project_id, r.id): r for r in records}
