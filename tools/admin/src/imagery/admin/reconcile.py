"""`imagery-admin reconcile`: the bucket against the database, after a database restore or
whenever the two may disagree.

The work is an operator job the processor runs (`admin_jobs`, kind "reconcile") with its own
reconciler, the one its housekeeping runs every PROCESSOR_RECONCILE_INTERVAL_SECONDS: same
grace (PROCESSOR_RECONCILE_GRACE_SECONDS), same job sandbox to render lost variants, and the
bucket access this command does not have. So even `--dry-run` is a job: it lists and heads
the bucket and changes nothing. Without `--remove-orphans` orphans are only reported. The
request is audited (`bucket.reconcile_requested`), and a run that changed things too
(`bucket.reconcile`, by the processor); the command waits, drawing the progress, and prints
what was found and done."""

from __future__ import annotations

import json
import os
from argparse import Namespace
from typing import Any

import asyncpg

from imagery.admin import direct, jobs
from imagery.admin.commands import UsageError
from imagery.admin.output import CliError, emit
from imagery.common.db.projects import audit

Plain = dict[str, Any]

# One unfinished reconcile at a time (the 0011 index): asking again with the same options
# reuses it.
_QUEUE = """
INSERT INTO admin_jobs (kind, target, requested_by, options)
VALUES ('reconcile', 'bucket', $1, $2::jsonb)
ON CONFLICT (kind, target) WHERE state IN ('queued', 'running')
DO UPDATE SET requested_by = admin_jobs.requested_by
RETURNING id, (xmax = 0) AS created, state, options::text"""


async def queue(dsn: str, *, dry_run: bool, remove_orphans: bool) -> Plain:
    options = {"dry_run": dry_run, "remove_orphans": remove_orphans}
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            row = await conn.fetchrow(_QUEUE, direct.actor().principal, json.dumps(options))
            assert row is not None
            if not row["created"] and json.loads(row["options"] or "{}") != options:
                raise CliError(
                    f"Reconcile job {row['id']} is {row['state']} with other options "
                    f"({_flags(json.loads(row['options'] or '{}'))}): wait for it to end "
                    "(`imagery-admin jobs list`), then ask again."
                )
            await audit(
                conn,
                direct.actor(),
                "bucket.reconcile_requested",
                "bucket",
                project_id=None,
                details={"job": row["id"], **options, "reused": not row["created"]},
            )
            job = await conn.fetchrow(f"{jobs.JOB} WHERE id = $1", row["id"])
    finally:
        await conn.close()
    assert job is not None
    return {**jobs.plain(job), "reused": not row["created"], "options": options}


def reconcile(args: Namespace) -> None:
    dsn: str | None = args.database_url or os.environ.get("DATABASE_URL")
    if not dsn:
        raise UsageError("set DATABASE_URL or pass --database-url")
    data = direct.run(lambda: queue(dsn, dry_run=args.dry_run, remove_orphans=args.remove_orphans))
    if not args.no_wait:
        done = jobs.wait_for(dsn, data)
        result = direct.run(lambda: jobs.result(dsn, data["id"]))
        data = {**done, "reused": data["reused"], "options": data["options"], "result": result}
    emit(args.json, data, lambda: _text(data))
    if data["state"] == "failed":
        raise CliError(f"Job {data['id']} failed: {data['error']}")


def _flags(options: Plain) -> str:
    names = (("--dry-run", "dry_run"), ("--remove-orphans", "remove_orphans"))
    return " ".join(flag for flag, key in names if options.get(key)) or "no flags"


def _text(job: Plain) -> str:
    result = job.get("result")
    if job["state"] not in ("done", "failed") or result is None:
        again = "already " if job["reused"] else ""
        return (
            f"Reconcile of the bucket ({_flags(job['options'])}) {again}{job['state']} as job "
            f"{job['id']}: follow it with `imagery-admin jobs list`."
        )
    dry = result["dry_run"]
    grace = _duration(result["grace_seconds"])
    lines = [
        f"{'Would reconcile' if dry else 'Reconciled'} the bucket with the database "
        f"(job {job['id']}; S3 versioning: {result['versioning']}; orphan grace: {grace}):",
        *_orphan_lines(result, dry, grace),
        *_lines(
            result["originals_restored"],
            f"originals {'would be ' if dry else ''}brought back from an earlier version",
        ),
        *_lines(
            result["variants_rebuilt"],
            f"variants {'would be ' if dry else ''}rendered again from their original",
        ),
    ]
    lost = result["content_lost"]
    lines += _lines(
        lost,
        "contents unrecoverable, no object and no earlier version left: "
        f"{lost['images']} READY images {'would ' if dry else ''}stay READY, answered "
        "IMAGE_CONTENT_LOST until the same file is uploaded again",
        [f"images/{image}" for image in lost["image_examples"]],
        of=lost["images"],
    )
    lines += _lines(
        result["originals_lost"],
        "originals gone with no earlier version: their variants still serve, "
        "but cannot be rendered again",
    )
    if dry:
        lines.append("Nothing was changed.")
    return "\n".join(lines)


def _orphan_lines(result: Plain, dry: bool, grace: str) -> list[str]:
    removed = result["orphans_removed"]["count"]
    if not result["remove_orphans"]:
        fate = "kept: `imagery-admin reconcile --remove-orphans` removes them"
    else:
        fate = f"{removed} {'would be ' if dry else ''}removed"
    return [
        *_lines(result["orphans"], f"orphans no record needs, older than {grace} ({fate})"),
        *_lines(
            result["orphans_in_grace"],
            f"orphans younger than {grace} (kept: perhaps being written; "
            "a run past the grace takes them)",
        ),
    ]


SHOWN = 3  # examples of each finding in the text (`--json` has up to ten)


def _lines(
    finding: Plain, what: str, examples: list[str] | None = None, *, of: int | None = None
) -> list[str]:
    """`count what`, then a few examples (of the finding, or of `of` others), one a line."""
    shown = (finding["examples"] if examples is None else examples)[:SHOWN]
    lines = [f"  {finding['count']} {what}", *(f"      {example}" for example in shown)]
    total = finding["count"] if of is None else of
    if total > len(shown) and shown:
        lines.append(f"      … and {total - len(shown)} more")
    return lines


def _duration(seconds: float) -> str:
    for unit, size in (("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)} {unit}"
    return f"{seconds:g} s"
