"""The event outbox in Postgres (migration 0026): a batch is read and locked in a transaction
that lasts until it is marked, so other relays skip it (SKIP LOCKED) and a relay that dies
before marking leaves it unpublished: its connection closes, the transaction rolls back."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from imagery.common.db.pool import postgres_errors, translates_postgres_errors
from imagery.processor.ports import OutboxEvent

_PENDING = """
SELECT id, type, project_id, image_id, sequence, trace_context, payload::text, created_at
  FROM event_outbox
 WHERE published_at IS NULL
 ORDER BY id
 LIMIT $1
   FOR UPDATE SKIP LOCKED"""

_MARK = "UPDATE event_outbox SET published_at = now() WHERE id = ANY($1::bigint[])"

_OLDEST = """
SELECT COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8
  FROM (SELECT created_at FROM event_outbox WHERE published_at IS NULL
         ORDER BY id LIMIT 1) oldest"""


@dataclass(slots=True)
class _Batch:
    conn: asyncpg.Connection | PoolConnectionProxy
    events: Sequence[OutboxEvent]

    @translates_postgres_errors
    async def mark_published(self, ids: Collection[int]) -> None:
        if ids:
            await self.conn.execute(_MARK, list(ids))


class PostgresEventOutbox:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @contextlib.asynccontextmanager
    async def pending(self, limit: int) -> AsyncIterator[_Batch]:
        with postgres_errors():
            async with self._pool.acquire() as conn, conn.transaction():
                rows = await conn.fetch(_PENDING, limit)
                yield _Batch(conn, [_event(row) for row in rows])

    @translates_postgres_errors
    async def oldest_pending_age(self) -> float:
        return float(await self._pool.fetchval(_OLDEST) or 0.0)


def _event(row: asyncpg.Record) -> OutboxEvent:
    return OutboxEvent(
        id=row["id"],
        type=row["type"],
        project_id=row["project_id"],
        image_id=row["image_id"],
        sequence=row["sequence"],
        trace_context=row["trace_context"],
        payload=json.loads(row["payload"]),
        created_at=row["created_at"],
    )
