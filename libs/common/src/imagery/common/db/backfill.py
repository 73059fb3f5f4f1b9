"""What bringing a project's content to a profile version takes, in Postgres: the processor's
backfill job does it, and `imagery-admin backfill --dry-run` counts it with the same query.

A project's content is the content addresses of its READY images. Content is due when its
`image_blobs.profile_version` is below the version, or at it with an at-ingest preset missing
(the deployment's default profile, version 0, gained a preset: VARIANT_PRESETS changed); for
each such content, a render is due for every at-ingest preset of that version with no variant
row at it (a preset's formats are written together, so one row stands for them all).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
from asyncpg.pool import PoolConnectionProxy


def _missing(version: str, presets: str) -> str:
    """The at-ingest presets (parameter `presets`) that content `b` has no variant of at the
    version (parameter `version`)."""
    return f"""
ARRAY(SELECT p.name FROM unnest({presets}::text[]) AS p(name)
       WHERE NOT EXISTS (SELECT 1 FROM image_variants v
                          WHERE v.sha256 = b.sha256 AND v.profile_version = {version}
                            AND v.name = p.name))"""


# $1 project, $2 resume after this address ('' from the start), $3 version, $4 preset names.
DUE_CONTENT = f"""
SELECT d.sha256, d.missing FROM (
    SELECT b.sha256, b.profile_version, {_missing("$3", "$4")} AS missing
      FROM image_blobs b
     WHERE b.sha256 IN (SELECT r.sha256 FROM image_records r
                         WHERE r.project_id = $1 AND r.status = 'ready' AND r.sha256 > $2)
       AND b.profile_version <= $3 AND b.stored_at IS NOT NULL
       AND b.collecting_since IS NULL) d
 WHERE d.profile_version < $3 OR cardinality(d.missing) > 0
 ORDER BY d.sha256"""

_PLAN = f"""
WITH due AS ({DUE_CONTENT})
SELECT (SELECT count(*) FROM due) AS contents,
       (SELECT COALESCE(sum(cardinality(missing)), 0) FROM due) AS renders,
       (SELECT count(*) FROM image_records r
         WHERE r.project_id = $1 AND r.status = 'ready'
           AND r.sha256 IN (SELECT sha256 FROM due)) AS images"""

# $1 project, $2 version, $3 preset names: the project's content, and how much of it is at
# the version with every at-ingest preset (or past it).
PROGRESS = f"""
SELECT count(*) AS total,
       count(*) FILTER (WHERE b.profile_version > $2 OR (b.profile_version = $2
                           AND cardinality({_missing("$2", "$3")}) = 0)) AS done
  FROM image_blobs b
 WHERE b.sha256 IN (SELECT r.sha256 FROM image_records r
                     WHERE r.project_id = $1 AND r.status = 'ready')"""

Connection = asyncpg.Connection | PoolConnectionProxy | asyncpg.Pool


@dataclass(frozen=True, slots=True)
class BackfillPlan:
    images: int  # READY images whose content is below the version
    contents: int  # those contents (identical images of a project share one)
    renders: int  # preset renders due
    total: int  # the project's contents
    done: int  # those at the version already


async def backfill_plan(
    conn: Connection, project_id: str, version: int, presets: Sequence[str]
) -> BackfillPlan:
    """What a backfill of `project_id` to `version` (whose at-ingest presets are `presets`)
    would do now."""
    due = await conn.fetchrow(_PLAN, project_id, "", version, list(presets))
    progress = await conn.fetchrow(PROGRESS, project_id, version, list(presets))
    assert due is not None and progress is not None  # aggregates: always one row
    return BackfillPlan(
        due["images"], due["contents"], due["renders"], progress["total"], progress["done"]
    )
