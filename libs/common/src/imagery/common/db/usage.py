"""Reading what projects store (`project_usage`, kept by the triggers of migration 0012)."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from imagery.common.tenancy import Usage

# The columns of a `project_usage u` row (LEFT JOINed: a project without one uses nothing).
USAGE_COLUMNS = """COALESCE(u.images, 0) AS usage_images, COALESCE(u.bytes, 0) AS usage_bytes,
    CASE WHEN u.day = (now() AT TIME ZONE 'UTC')::date THEN u.day_uploads ELSE 0 END
        AS usage_today"""


def usage_from_row(row: asyncpg.Record) -> Usage:
    return Usage(row["usage_images"], row["usage_bytes"], row["usage_today"])


async def read_usage(
    pool: asyncpg.Pool | asyncpg.Connection, project_ids: Sequence[str]
) -> dict[str, Usage]:
    """Each project's usage (absent: the project has no usage row yet)."""
    rows = await pool.fetch(
        f"SELECT u.project_id, {USAGE_COLUMNS} FROM project_usage u"
        " WHERE u.project_id = ANY($1::text[])",
        list(project_ids),
    )
    return {row["project_id"]: usage_from_row(row) for row in rows}
