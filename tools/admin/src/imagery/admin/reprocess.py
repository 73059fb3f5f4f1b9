"""`imagery-admin reprocess`: run failed uploads again under the same image id.

An upload that failed for a reason that may not be the file's fault keeps its bytes under
`retained/{image_id}` for RETAINED_FAILED_DAYS (`image_records.retained_until`, migration
0020). Straight against Postgres, like `backfill`: in one transaction each image goes back to
`pending` (failure reason cleared, attempts reset), is audited as `image.reprocess`, and gets
a `reprocess` operator job. The processor runs the job: it copies the retained bytes back to
`uploads/{image_id}`, and that object's S3 event processes the record as any upload. The
command needs no bucket access of its own. One image the command cannot reprocess refuses
the whole command, and nothing changes."""

from __future__ import annotations

from argparse import Namespace
from collections.abc import Sequence
from typing import Any

import asyncpg

from imagery.admin import direct, jobs
from imagery.admin.output import CliError, emit, iso
from imagery.common.db.projects import audit
from imagery.common.storage_keys import RETAINABLE_REASONS

Plain = dict[str, Any]

_IMAGES = """
SELECT r.id, r.project_id, r.status, r.failure_reason, r.retained_until,
       r.retained_until IS NOT NULL AND r.retained_until > now() AS kept,
       p.deleted_at IS NOT NULL AS project_deleted
  FROM image_records r JOIN projects p ON p.id = r.project_id
 WHERE r.id = ANY($1::text[]) ORDER BY r.id FOR UPDATE OF r"""

_RETAINED_OF_PROJECT = """
SELECT id, project_id, status, failure_reason, retained_until, true AS kept
  FROM image_records
 WHERE project_id = $1 AND status = 'failed' AND failure_reason = ANY($2::text[])
   AND retained_until > now()
 ORDER BY id FOR UPDATE"""

_BACK_TO_PENDING = """
UPDATE image_records
   SET status = 'pending', failure_reason = NULL, attempts = 0, swept_at = NULL,
       updated_at = now()
 WHERE id = $1 AND status = 'failed'"""

# One unfinished reprocess per image (the 0011 index): asking again reuses it.
_QUEUE = """
INSERT INTO admin_jobs (kind, target, requested_by) VALUES ('reprocess', $1, $2)
ON CONFLICT (kind, target) WHERE state IN ('queued', 'running')
DO UPDATE SET requested_by = admin_jobs.requested_by
RETURNING id"""


def _refusal(image_id: str, row: asyncpg.Record | None, project: str | None) -> str | None:
    if row is None or (project is not None and row["project_id"] != project):
        where = f" in project {project!r}" if project else ""
        return f"No image {image_id}{where}: check the id (the API's GetImage shows it)."
    if row["project_deleted"]:
        return (
            f"Image {image_id} is in project {row['project_id']!r}, which is deleted and waits "
            "for its purge: restore the project before reprocessing its images."
        )
    if row["status"] != "failed":
        return (
            f"Image {image_id} is {row['status'].upper()}, not FAILED: only a failed upload "
            "can be reprocessed."
        )
    if row["failure_reason"] not in RETAINABLE_REASONS:
        return (
            f"Image {image_id} failed with {row['failure_reason']}, a fault of the file itself, "
            "so its bytes were not kept: the client must upload it again."
        )
    if not row["kept"]:
        until = iso(row["retained_until"])
        return (
            f"The retained bytes of image {image_id} "
            + (f"expired at {until}" if until else "were not kept")
            + " (RETAINED_FAILED_DAYS): the client must upload it again."
        )
    return None


async def _eligible(
    conn: asyncpg.Connection, image_ids: Sequence[str], project: str | None
) -> list[asyncpg.Record]:
    if not image_ids:
        assert project is not None
        deleted = await conn.fetchval(
            "SELECT deleted_at IS NOT NULL FROM projects WHERE id = $1 FOR SHARE", project
        )
        if deleted is None:
            raise CliError(f"No project is named {project!r}: see `imagery-admin projects list`.")
        if deleted:
            raise CliError(
                f"Project {project!r} is deleted and waits for its purge: restore it before "
                "reprocessing its images."
            )
        return list(await conn.fetch(_RETAINED_OF_PROJECT, project, sorted(RETAINABLE_REASONS)))
    rows = {r["id"]: r for r in await conn.fetch(_IMAGES, list(image_ids))}
    for image_id in image_ids:
        refused = _refusal(image_id, rows.get(image_id), project)
        if refused is not None:
            raise CliError(refused)
    return [rows[i] for i in dict.fromkeys(image_ids)]


async def plan_or_queue(
    dsn: str, image_ids: Sequence[str], project: str | None, *, dry_run: bool
) -> Plain:
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            rows = await _eligible(conn, image_ids, project)
            images = [
                {
                    "image_id": r["id"],
                    "project_id": r["project_id"],
                    "failure_reason": r["failure_reason"],
                    "retained_until": iso(r["retained_until"]),
                    "job": None,
                }
                for r in rows
            ]
            if dry_run:
                return {"dry_run": True, "images": images}
            who = direct.actor()
            for image in images:
                await conn.execute(_BACK_TO_PENDING, image["image_id"])
                image["job"] = await conn.fetchval(_QUEUE, image["image_id"], who.principal)
                await audit(
                    conn,
                    who,
                    "image.reprocess",
                    f"images/{image['image_id']}",
                    project_id=image["project_id"],
                    details={"previous_reason": image["failure_reason"], "job": image["job"]},
                )
    finally:
        await conn.close()
    return {"images": images}


def reprocess(args: Namespace, dsn: str) -> None:
    ids, project = list(args.image_ids), args.project
    data = direct.run(lambda: plan_or_queue(dsn, ids, project, dry_run=args.dry_run))
    failed: list[Plain] = []
    if not args.dry_run and not args.no_wait:
        for image in data["images"]:
            job = jobs.wait_for(dsn, {"id": image["job"]})
            image["job_state"], image["job_error"] = job["state"], job["error"]
            if job["state"] == "failed":
                failed.append(image)
    emit(args.json, data, lambda: _text(data, dry_run=args.dry_run))
    if failed:
        raise CliError(failed[0]["job_error"] + ".")


def _text(data: Plain, *, dry_run: bool) -> str:
    images = data["images"]
    if not images:
        return "No failed image with retained bytes to reprocess. Nothing was changed."
    lines = [
        f"images/{i['image_id']} (projects/{i['project_id']}, failed with "
        f"{i['failure_reason']})" + (f": {i['job_state']}" if i.get("job_state") else "")
        for i in images
    ]
    if dry_run:
        head = f"Would reprocess {len(images)} image(s) under their own ids:"
        return "\n".join([head, *lines, "Nothing was changed."])
    head = (
        f"Reprocessing {len(images)} image(s): each is pending again and its retained bytes "
        "go back to uploads/, so the processor runs it as any upload (GetImage shows it end):"
    )
    return "\n".join([head, *lines])
