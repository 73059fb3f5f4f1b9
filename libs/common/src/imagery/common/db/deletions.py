"""The deletion feed (migration 0004): read by delivery's download-target cache before every
answer, pruned by the processor's housekeeping."""

from __future__ import annotations

import asyncio

import asyncpg

from imagery.common.db.pool import translates_postgres_errors

# How long the feed keeps a row. A reader that has not caught up for half of this must drop
# what it cached instead.
DELETION_FEED_RETENTION_SECONDS = 86_400

_READ = """SELECT pg_snapshot_xmin(pg_current_snapshot())::text,
                  ARRAY(SELECT image_id FROM image_deletions WHERE xid >= $1::text::xid8)"""


class PostgresDeletionFeed:
    """Reads over one pooled connection it keeps between reads: the cache never has two reads
    in flight, and a pool acquire plus release per read cost about as much CPU as the query
    itself. On any error the connection is closed (the pool opens a fresh one for the next
    read) and the read fails like any other query. `close()` before the pool closes."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._conn: asyncpg.pool.PoolConnectionProxy | None = None
        self._lock = asyncio.Lock()

    @translates_postgres_errors
    async def deletion_horizon(self) -> int:
        """The oldest transaction still running: every delete committed from now on belongs
        to a transaction at or after it (the starting point for `deletions_since`)."""
        value = await self._pool.fetchval("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")
        return int(value)

    @translates_postgres_errors
    async def deletions_since(self, horizon: int) -> tuple[int, list[str]]:
        """Ids deleted by transactions at or after `horizon` (as seen now), and the horizon
        for the next call. Read in one statement, so both come from the same snapshot."""
        async with self._lock:
            if self._conn is None:
                self._conn = await self._pool.acquire()
            try:
                row = await self._conn.fetchrow(_READ, str(horizon))
            except BaseException:
                await self._give_back(discard=True)
                raise
        assert row is not None
        return int(row[0]), list(row[1])

    @translates_postgres_errors
    async def prune(self, older_than_seconds: float) -> int:
        """Forget deletions older than the retention; returns how many rows went."""
        result = await self._pool.execute(
            "DELETE FROM image_deletions WHERE deleted_at < now() - make_interval(secs => $1)",
            older_than_seconds,
        )
        return int(result.split()[-1])

    async def close(self) -> None:
        async with self._lock:
            await self._give_back()

    async def _give_back(self, *, discard: bool = False) -> None:
        """Return the kept connection; after a failed read, closed instead: its protocol state
        is unknown (a terminated session can leave asyncpg mid-exchange), and the pool opens
        a fresh one for the next read."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if discard:
            conn.terminate()  # hands the pool slot back itself; release() then does nothing
        await self._pool.release(conn)
