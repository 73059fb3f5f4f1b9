"""PostgresImageListing: the reads of several images at once (BatchGetImages, ListImages)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from imagery.common.db.images import record_from_row, select_records
from imagery.common.db.pool import translates_postgres_errors
from imagery.common.domain import ImageRecord
from imagery.common.listing import (
    AllOf,
    AnyOf,
    CreatedAt,
    Filter,
    HasLabel,
    LabelIs,
    Not,
    PagePosition,
    StatusIs,
)

# Newest first, then by id: the order of the (project_id, created_at DESC, id) index (0016),
# so a page is one range scan that starts right after the previous page's last image.
_PAGE = """{select} WHERE r.project_id = $1
   AND ($2::timestamptz IS NULL OR r.created_at < $2 OR (r.created_at = $2 AND r.id > $3))
   AND ({where})
 ORDER BY r.created_at DESC, r.id
 LIMIT $4"""


class PostgresImageListing:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @translates_postgres_errors
    async def find_many(self, project_id: str, image_ids: Sequence[str]) -> list[ImageRecord]:
        """The project's records among `image_ids`, in no particular order."""
        rows = await self._pool.fetch(
            f"{select_records()} WHERE r.id = ANY($1::text[]) AND r.project_id = $2",
            list(image_ids),
            project_id,
        )
        return [record_from_row(row) for row in rows]

    @translates_postgres_errors
    async def list_page(
        self, project_id: str, match: Filter | None, after: PagePosition | None, size: int
    ) -> list[ImageRecord]:
        """Up to `size` of the project's records that `match`, in (create_time desc, id)
        order, starting after `after`."""
        params: list[Any] = [
            project_id,
            None if after is None else after.created_at,
            None if after is None else after.image_id,
            size,
        ]
        where = "TRUE" if match is None else _sql(match, params)
        rows = await self._pool.fetch(_PAGE.format(select=select_records(), where=where), *params)
        return [record_from_row(row) for row in rows]


def _bind(params: list[Any], value: Any) -> str:
    params.append(value)
    return f"${len(params)}"


def _sql(node: Filter, params: list[Any]) -> str:
    """SQL for one filter node; every value travels as a parameter."""
    match node:
        case StatusIs(op, status):
            return f"r.status {'=' if op == '=' else '<>'} {_bind(params, status.value)}"
        case LabelIs(op, key, value):
            label = f"(r.labels ->> {_bind(params, key)})"
            bound = _bind(params, value)
            return f"{label} = {bound}" if op == "=" else f"{label} IS DISTINCT FROM {bound}"
        case HasLabel(key):
            return f"(r.labels ? {_bind(params, key)})"
        case CreatedAt(op, at):
            sql_op = "<>" if op == "!=" else op
            return f"r.created_at {sql_op} {_bind(params, at)}::timestamptz"
        case Not(part):
            return f"NOT ({_sql(part, params)})"
        case AllOf(parts):
            return "(" + " AND ".join(_sql(p, params) for p in parts) + ")"
        case AnyOf(parts):
            return "(" + " OR ".join(_sql(p, params) for p in parts) + ")"
    raise TypeError(f"not a filter node: {node!r}")
