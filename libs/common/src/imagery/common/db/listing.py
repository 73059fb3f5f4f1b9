"""PostgresImageListing: ListImages' pages of a project's images."""

from __future__ import annotations

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
# so a page is one range scan that starts right after the previous page's last image. The
# `created_at <= $n` beside the exact keyset test is what the planner can use as an index
# condition (the mixed-direction pair is not a row comparison it can seek to).
_PAGE = """{select} WHERE r.project_id = $1{after}
   AND ({where})
 ORDER BY r.created_at DESC, r.id
 LIMIT $2"""
_AFTER = """
   AND r.created_at <= {at}::timestamptz
   AND (r.created_at < {at}::timestamptz OR r.id > {image_id})"""


def page_query(
    project_id: str, match: Filter | None, after: PagePosition | None, size: int
) -> tuple[str, list[Any]]:
    """The SQL and parameters of one ListImages page."""
    params: list[Any] = [project_id, size]
    keyset = ""
    if after is not None:
        keyset = _AFTER.format(
            at=_bind(params, after.created_at), image_id=_bind(params, after.image_id)
        )
    where = "TRUE" if match is None else _sql(match, params)
    return _PAGE.format(select=select_records(), after=keyset, where=where), params


class PostgresImageListing:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @translates_postgres_errors
    async def list_page(
        self, project_id: str, match: Filter | None, after: PagePosition | None, size: int
    ) -> list[ImageRecord]:
        """Up to `size` of the project's records that `match`, in (create_time desc, id)
        order, starting after `after`."""
        sql, params = page_query(project_id, match, after, size)
        rows = await self._pool.fetch(sql, *params)
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
        case Not(part):  # two-valued, as != is: a label the image lacks makes it true
            return f"(({_sql(part, params)}) IS NOT TRUE)"
        case AllOf(parts):
            return "(" + " AND ".join(_sql(p, params) for p in parts) + ")"
        case AnyOf(parts):
            return "(" + " OR ".join(_sql(p, params) for p in parts) + ")"
    raise TypeError(f"not a filter node: {node!r}")
