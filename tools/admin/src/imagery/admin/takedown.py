"""`imagery-admin block` and `unblock`: take a file down everywhere, and let it be uploaded
again.

Straight against Postgres, in one transaction under the bytes' advisory lock (the processor
takes it too before an image turns READY, so none slips past): the bytes' SHA-256 goes into
`blocked_content` (migration 0027); every READY image of those bytes, in every project, turns
BLOCKED (failure_reason BLOCKED) and lets go of its content, and delivery replicas drop it from
their caches when the transaction commits; an `image.blocked` event goes out for each (the
outbox triggers, 0026); it is audited as `content.block`. Then a `takedown` operator job, run
by the processor (which holds the bucket and CloudFront access the command does not), deletes
every version of the content's objects in every project and asks CloudFront to invalidate one
wildcard per content's variant folder; the command waits for it and prints what it did.
From then on an upload of those bytes ends FAILED with BLOCKED.

`unblock` deletes the row (audited as `content.unblock`): uploads of the bytes are accepted
again. Images already BLOCKED stay BLOCKED: their content is gone, their owners upload again."""

from __future__ import annotations

from argparse import Namespace
from typing import Any

import asyncpg

from imagery.admin import direct, jobs
from imagery.admin.output import CliError, emit, iso, table, when
from imagery.common.db.projects import audit
from imagery.common.ids import is_image_id, is_sha256

Plain = dict[str, Any]

_TARGET = "SELECT digest, status, project_id FROM image_records WHERE id = $1"
_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('imagery:content:' || $1, 0))"
_BLOCK = """
INSERT INTO blocked_content (sha256, reason, blocked_by) VALUES ($1, $2, $3)
ON CONFLICT (sha256) DO UPDATE
   SET reason = EXCLUDED.reason, blocked_by = EXCLUDED.blocked_by, blocked_at = now()
RETURNING (xmax = 0) AS created"""

_READY_OF = """
SELECT id, project_id FROM image_records
 WHERE sha256 = ANY(content_addresses($1)) AND status = 'ready'
 ORDER BY project_id, id"""

# Each READY image of the bytes (any project: their content addresses) turns BLOCKED and
# drops its content reference; the content, unreferenced, is the takedown job's to delete.
_BLOCK_IMAGES = """
WITH hit AS (
    SELECT id, sha256 AS content FROM image_records
     WHERE sha256 = ANY(content_addresses($1)) AND status = 'ready'
     ORDER BY id FOR UPDATE),
blocked AS (
    UPDATE image_records r
       SET status = 'blocked', failure_reason = 'BLOCKED', sha256 = NULL, phash = NULL,
           updated_at = now()
      FROM hit WHERE r.id = hit.id
    RETURNING r.id, r.project_id, hit.content),
refs AS (
    UPDATE image_blobs b SET reference_count = b.reference_count - c.n, updated_at = now()
      FROM (SELECT content, count(*) AS n FROM blocked GROUP BY content) c
     WHERE b.sha256 = c.content)
SELECT id, project_id FROM blocked ORDER BY project_id, id"""

# Renders asked for the content (lazy presets, backfills) would write variants again.
_DROP_RENDER_ASKS = "DELETE FROM render_requests WHERE sha256 = ANY(content_addresses($1))"

# Delivery caches READY targets until told: the same notice a deletion sends.
_EVICT = "SELECT pg_notify('imagery_changes', 'image:' || id) FROM unnest($1::text[]) id"

_QUEUE = """
INSERT INTO admin_jobs (kind, target, requested_by) VALUES ('takedown', $1, $2)
ON CONFLICT (kind, target) WHERE state IN ('queued', 'running')
DO UPDATE SET requested_by = admin_jobs.requested_by
RETURNING id"""

_UNBLOCK = "DELETE FROM blocked_content WHERE sha256 = $1 RETURNING reason, blocked_at"
# A takedown still to run would delete the content of an upload made after the unblock.
_TAKEDOWN_UNFINISHED = """
SELECT id, state FROM admin_jobs
 WHERE kind = 'takedown' AND target = $1 AND state IN ('queued', 'running')"""
_STILL_BLOCKED = "SELECT count(*) FROM image_records WHERE digest = $1 AND status = 'blocked'"


async def _sha256_of(conn: asyncpg.Connection, target: str) -> str:
    if is_sha256(target):
        return target
    if not is_image_id(target):
        raise CliError(
            f"{target[:80]!r} is neither a SHA-256 (64 lower-case hex digits) nor an image id: "
            "give the file's SHA-256 or the id of an image of it."
        )
    row = await conn.fetchrow(_TARGET, target)
    if row is None:
        raise CliError(f"No image {target}: check the id (any project's image will do).")
    if row["digest"] is None:
        raise CliError(
            f"images/{target} has no verified bytes ({row['status']}): wait until it is READY, "
            "or block the file's SHA-256 (`sha256sum FILE`)."
        )
    return str(row["digest"])


def _by_project(rows: list[asyncpg.Record]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["project_id"]] = counts.get(row["project_id"], 0) + 1
    return counts


async def block_content(dsn: str, target: str, reason: str, *, dry_run: bool) -> Plain:
    actor = direct.actor()
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            sha256 = await _sha256_of(conn, target)
            if dry_run:
                ready = await conn.fetch(_READY_OF, sha256)
                return {"sha256": sha256, "dry_run": True, "projects": _by_project(ready)}
            await conn.execute(_LOCK, sha256)
            created = await conn.fetchval(_BLOCK, sha256, reason, actor.principal)
            blocked = await conn.fetch(_BLOCK_IMAGES, sha256)
            await conn.execute(_DROP_RENDER_ASKS, sha256)
            await conn.execute(_EVICT, [row["id"] for row in blocked])
            projects = _by_project(blocked)
            job_id = await conn.fetchval(_QUEUE, sha256, actor.principal)
            await audit(
                conn,
                actor,
                "content.block",
                f"content/{sha256}",
                project_id=None,
                details={
                    "reason": reason,
                    "images": len(blocked),
                    "projects": projects,
                    "already_blocked": not created,
                    "job": job_id,
                },
            )
            job = await conn.fetchrow(f"{jobs.JOB} WHERE id = $1", job_id)
    finally:
        await conn.close()
    assert job is not None
    return {
        **jobs.plain(job),
        "sha256": sha256,
        "dry_run": False,
        "reason": reason,
        "projects": projects,
        "images_blocked": len(blocked),
    }


def block(args: Namespace, dsn: str) -> None:
    reason = args.reason.strip()
    if not reason:
        raise CliError("--reason is empty: say why the file is taken down (it is audited).")
    data = direct.run(lambda: block_content(dsn, args.target, reason, dry_run=args.dry_run))
    if not data["dry_run"] and not args.no_wait:
        done = jobs.wait_for(dsn, data)
        result = direct.run(lambda: jobs.result(dsn, data["id"]))
        data = {**data, **done, "result": result}
    emit(args.json, data, lambda: _block_text(data))
    if data.get("state") == "failed":
        raise CliError(f"Job {data['id']} failed: {data['error']}")


def _projects_text(projects: dict[str, int]) -> str:
    if not projects:
        return "no READY image"
    total = sum(projects.values())
    each = ", ".join(f"{p}: {n}" for p, n in sorted(projects.items()))
    return f"{total} image{'s' if total != 1 else ''} ({each})"


def _block_text(data: Plain) -> str:
    sha256 = data["sha256"]
    if data["dry_run"]:
        return (
            f"Would block content {sha256}: {_projects_text(data['projects'])} would turn "
            "BLOCKED. Nothing was changed."
        )
    lines = [
        f"Blocked content {sha256} ({data['reason']}): {_projects_text(data['projects'])} "
        "now BLOCKED; uploads of these bytes end FAILED with BLOCKED."
    ]
    result = data.get("result")
    if result is None:
        lines.append(
            f"Deleting and invalidating it is job {data['id']} ({data['state']}): follow it with "
            "`imagery-admin jobs list`."
        )
    elif result.get("skipped"):
        lines.append(f"Job {data['id']} deleted nothing: {result['skipped']}.")
    else:
        lines.append(
            f"Deleted {result['contents']} stored content(s): "
            f"{result['object_versions_deleted']} object version(s), every version."
        )
        invalidations = result.get("invalidations") or []
        for invalidation in invalidations:
            lines.append(
                f"CloudFront invalidation {invalidation['id']}: " + ", ".join(invalidation["paths"])
            )
        if result.get("invalidation_skipped"):
            lines.append(f"No CloudFront invalidation: {result['invalidation_skipped']}.")
        elif not invalidations:
            lines.append("No CloudFront invalidation: nothing of it was stored.")
    lines.append(f"Undo with `imagery-admin unblock {sha256} --reason ...`.")
    return "\n".join(lines)


async def unblock_content(dsn: str, target: str, reason: str, *, dry_run: bool) -> Plain:
    actor = direct.actor()
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            sha256 = await _sha256_of(conn, target)
            await conn.execute(_LOCK, sha256)
            unfinished = await conn.fetchrow(_TAKEDOWN_UNFINISHED, sha256)
            if unfinished is not None:
                raise CliError(
                    f"The takedown of {sha256} is still {unfinished['state']} (job "
                    f"{unfinished['id']}): wait until `imagery-admin jobs list` shows it done, "
                    "then unblock."
                )
            row = await conn.fetchrow(_UNBLOCK, sha256)
            if row is None:
                raise CliError(
                    f"Content {sha256} is not blocked: nothing to undo "
                    "(`imagery-admin audit` shows past blocks)."
                )
            still = int(await conn.fetchval(_STILL_BLOCKED, sha256))
            await audit(
                conn,
                actor,
                "content.unblock",
                f"content/{sha256}",
                project_id=None,
                details={"reason": reason, "blocked_for": row["reason"], "images_blocked": still},
            )
            if dry_run:
                raise _Rollback({"sha256": sha256, "dry_run": True, "images_blocked": still})
    except _Rollback as rollback:
        return rollback.data
    finally:
        await conn.close()
    return {"sha256": sha256, "dry_run": False, "images_blocked": still, "reason": reason}


class _Rollback(Exception):
    def __init__(self, data: Plain) -> None:
        super().__init__("dry run")
        self.data = data


def unblock(args: Namespace, dsn: str) -> None:
    reason = args.reason.strip()
    if not reason:
        raise CliError("--reason is empty: say why the file may be uploaded again (audited).")
    data = direct.run(lambda: unblock_content(dsn, args.target, reason, dry_run=args.dry_run))

    def text() -> str:
        verb = "Would unblock" if data["dry_run"] else "Unblocked"
        return (
            f"{verb} content {data['sha256']}: uploads of these bytes are accepted again. "
            f"The {data['images_blocked']} image(s) it blocked stay BLOCKED (their content is "
            "gone): their owners upload the file again."
            + (" Nothing was changed." if data["dry_run"] else "")
        )

    emit(args.json, data, text)


async def list_blocked(dsn: str, limit: int) -> list[Plain]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT sha256, reason, blocked_by, blocked_at FROM blocked_content"
            " ORDER BY blocked_at DESC LIMIT $1",
            limit,
        )
    finally:
        await conn.close()
    return [{**dict(row), "blocked_at": iso(row["blocked_at"])} for row in rows]


def blocked(args: Namespace, dsn: str) -> None:
    data = direct.run(lambda: list_blocked(dsn, args.limit))
    emit(
        args.json,
        data,
        lambda: (
            table(
                ("SHA256", "BLOCKED", "BY", "REASON"),
                ((b["sha256"], when(b["blocked_at"]), b["blocked_by"], b["reason"]) for b in data),
            )
            if data
            else "No content is blocked."
        ),
    )
