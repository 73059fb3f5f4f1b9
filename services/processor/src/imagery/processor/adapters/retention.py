"""Retention in Postgres: one statement per kept table that deletes one batch of its rows
past their days, oldest first, found through the index migration 0021 (or an earlier one)
made for it; and the tables' sizes from the planner's statistics. A batch is picked into an
array first, so the DELETE fetches its rows by key (or address) instead of joining the
table. Adding a table (the outbox) is one entry in `_PRUNE` (and in `_SIZES` for the
metric) and one `RetentionRule` in bootstrap."""

from __future__ import annotations

from typing import NamedTuple

import asyncpg

from imagery.common.db.pool import translates_postgres_errors

_PRUNE: dict[str, str] = {
    # Append-only; nothing refers to an event. Through a function that runs as the schema's
    # owner and keeps 30 days whatever it is asked (0025): the processor's role may not
    # delete audit events itself.
    "audit_events": "SELECT prune_audit_events($1, $2)",
    # The deletion feed has no key: a batch is its rows' physical addresses (a TID scan).
    "image_deletions": """
DELETE FROM image_deletions WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM image_deletions WHERE deleted_at < now() - make_interval(days => $1)
     ORDER BY deleted_at LIMIT $2))""",
    # A FAILED record holds no content reference (sha256 is set only as it turns READY) and
    # counts for nothing in its project's usage (0013's image_charge), so deleting it changes
    # no count. It stays while its bytes are kept under `retained/` (`retained_until`):
    # `imagery-admin reprocess` needs it to run them again, and the reconciler keeps them
    # only while it exists. Rows being changed (a reprocess taking one back to pending) are
    # skipped, and the lock re-reads the conditions of a row changed since the statement
    # began.
    "failed_images": """
DELETE FROM image_records WHERE id = ANY(ARRAY(
    SELECT id FROM image_records
     WHERE status = 'failed' AND updated_at < now() - make_interval(days => $1)
       AND sha256 IS NULL AND (retained_until IS NULL OR retained_until <= now())
     ORDER BY updated_at LIMIT $2
       FOR UPDATE SKIP LOCKED))""",
    # A finished job whose render asks are not all answered yet is still named by them.
    "admin_jobs": """
DELETE FROM admin_jobs WHERE id = ANY(ARRAY(
    SELECT j.id FROM admin_jobs j
     WHERE j.state IN ('done', 'failed')
       AND j.finished_at < now() - make_interval(days => $1)
       AND NOT EXISTS (SELECT 1 FROM render_requests q WHERE q.job_id = j.id)
     ORDER BY j.finished_at LIMIT $2))""",
    # Published or not: an event that waited this long for the topic is given up (the
    # imagery.events.outbox.age alert fires long before).
    "event_outbox": """
DELETE FROM event_outbox WHERE id = ANY(ARRAY(
    SELECT id FROM event_outbox WHERE created_at < now() - make_interval(days => $1)
     ORDER BY created_at LIMIT $2
       FOR UPDATE SKIP LOCKED))""",
}


class _Size(NamedTuple):
    """How the `imagery.table.rows` metric finds one table's rows: the pg_class.reltuples of
    `relation` (kept by autovacuum and ANALYZE), or the count `exact` while `table` has no
    statistics (reltuples -1: never analyzed, which autovacuum allows only while a table is
    small)."""

    relation: str
    table: str
    exact: str


_SIZES: dict[str, _Size] = {
    "audit_events": _Size(
        "public.audit_events", "public.audit_events", "SELECT count(id) FROM audit_events"
    ),
    "image_deletions": _Size(
        "public.image_deletions", "public.image_deletions", "SELECT count(*) FROM image_deletions"
    ),
    # The FAILED rows' partial index (0021) holds an entry per row.
    "failed_images": _Size(
        "public.image_records_failed_idx",
        "public.image_records",
        "SELECT count(*) FROM image_records WHERE status = 'failed'",
    ),
    "admin_jobs": _Size(
        "public.admin_jobs", "public.admin_jobs", "SELECT count(*) FROM admin_jobs"
    ),
    "event_outbox": _Size(
        "public.event_outbox", "public.event_outbox", "SELECT count(*) FROM event_outbox"
    ),
    "render_requests": _Size(
        "public.render_requests", "public.render_requests", "SELECT count(*) FROM render_requests"
    ),
}

# NULL for a table without statistics yet.
_ESTIMATES = """
SELECT s.name, CASE WHEN t.reltuples >= 0 THEN c.reltuples END
  FROM unnest($1::text[], $2::text[], $3::text[]) AS s(name, relation, of_table)
  JOIN pg_class c ON c.oid = to_regclass(s.relation)
  JOIN pg_class t ON t.oid = to_regclass(s.of_table)"""


class PostgresRetention:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @translates_postgres_errors
    async def prune(self, table: str, *, days: int, limit: int) -> int:
        if days < 1:  # 0 would be every row
            raise ValueError(f"A retention of {days} days for {table}: it must be at least 1.")
        if _PRUNE[table].startswith("SELECT"):
            return int(await self._pool.fetchval(_PRUNE[table], days, limit))
        result = await self._pool.execute(_PRUNE[table], days, limit)
        return int(result.split()[-1])

    @translates_postgres_errors
    async def row_estimates(self) -> dict[str, int]:
        names = list(_SIZES)
        rows = await self._pool.fetch(
            _ESTIMATES,
            names,
            [_SIZES[n].relation for n in names],
            [_SIZES[n].table for n in names],
        )
        sizes: dict[str, int] = {}
        for name, reltuples in rows:
            if reltuples is None:
                sizes[name] = await self._pool.fetchval(_SIZES[name].exact)
            else:
                sizes[name] = round(reltuples)
        return sizes
