"""The deletion feed (migration 0004), as it is now: written by DeleteImage for one more
release, for delivery replicas of the release before the change bus, which still read it
while a rolling deploy replaces them; pruned by the processor's housekeeping. Current
replicas hear deletions on the change bus (`imagery.common.db.changes`)."""

from __future__ import annotations

import asyncpg

from imagery.common.db.pool import translates_postgres_errors

# How long the feed keeps a row. A reader that has not caught up for half of this must drop
# what it cached instead.
DELETION_FEED_RETENTION_SECONDS = 86_400


class PostgresDeletionFeed:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @translates_postgres_errors
    async def prune(self, older_than_seconds: float) -> int:
        """Forget deletions older than the retention; returns how many rows went."""
        result = await self._pool.execute(
            "DELETE FROM image_deletions WHERE deleted_at < now() - make_interval(secs => $1)",
            older_than_seconds,
        )
        return int(result.split()[-1])
