"""Long work as job rows (migration 0011) that the processor runs: queue one, then watch it
with a progress bar (on stderr, so `--json` output stays clean) until it ends."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from argparse import Namespace
from typing import Any, TextIO

import asyncpg

from imagery.admin import direct
from imagery.admin.output import CliError, emit, iso
from imagery.common.db.projects import audit

Plain = dict[str, Any]
JOB = """SELECT id, kind, target, state, total, done_count, requested_by, error, created_at,
                started_at, finished_at, version, made, failed, moved FROM admin_jobs"""
# what `total` and `done` count
_UNITS = {"purge_project": "images", "backfill": "blobs", "reconcile": "blobs checked"}


def plain(row: asyncpg.Record) -> Plain:
    backfill = (
        {
            "profile_version": row["version"],
            "renders_made": row["made"],
            "renders_failed": row["failed"],
            "blobs_moved": row["moved"],
        }
        if row["kind"] == "backfill"
        else {}
    )
    return {
        "id": row["id"],
        "kind": row["kind"],
        "target": row["target"],
        "state": row["state"],
        "total": row["total"],
        "done": row["done_count"],
        "requested_by": row["requested_by"],
        "error": row["error"],
        "created_at": iso(row["created_at"]),
        "started_at": iso(row["started_at"]),
        "finished_at": iso(row["finished_at"]),
        **backfill,
    }


async def queue_purge(dsn: str, project_id: str, *, dry_run: bool) -> Plain:
    """A purge job for a deleted project, now rather than at its purge time."""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            deleted = await conn.fetchval(
                "SELECT deleted_at IS NOT NULL FROM projects WHERE id = $1", project_id
            )
            if deleted is None:
                raise CliError(
                    f"No project is named {project_id!r}: "
                    "see `imagery-admin projects list --show-deleted`."
                )
            if not deleted:
                raise CliError(
                    f"Project {project_id!r} is not deleted: delete it first "
                    f"(`imagery-admin projects delete {project_id}`), then purge it."
                )
            images = await conn.fetchval(
                "SELECT count(*) FROM image_records WHERE project_id = $1", project_id
            )
            if dry_run:
                return {"dry_run": True, "project": project_id, "images": images}
            row = await conn.fetchrow(
                """INSERT INTO admin_jobs (kind, target, requested_by)
                   VALUES ('purge_project', $1, $2)
                   ON CONFLICT (kind, target) WHERE state IN ('queued', 'running')
                   DO UPDATE SET requested_by = admin_jobs.requested_by
                   RETURNING id""",
                project_id,
                direct.actor().principal,
            )
            assert row is not None
            await audit(
                conn,
                direct.actor(),
                "project.purge_requested",
                f"projects/{project_id}",
                project_id=project_id,
                details={"job": row["id"]},
            )
            job = await conn.fetchrow(f"{JOB} WHERE id = $1", row["id"])
    finally:
        await conn.close()
    assert job is not None
    return plain(job)


async def watch(dsn: str, job_id: int, *, stream: TextIO, interval: float = 0.5) -> Plain:
    """Poll the job until it ends, drawing its progress; returns its final row."""
    conn = await asyncpg.connect(dsn)
    try:
        while True:
            row = await conn.fetchrow(f"{JOB} WHERE id = $1", job_id)
            if row is None:
                raise CliError(f"Job {job_id} is gone: see `imagery-admin jobs list`.")
            job = plain(row)
            _draw(job, stream)
            if job["state"] in ("done", "failed"):
                stream.write("\n")
                return job
            await asyncio.sleep(interval)
    finally:
        await conn.close()


def _draw(job: Plain, stream: TextIO, width: int = 30) -> None:
    total, done = job["total"], job["done"]
    if not total:
        bar, figures = "." * width, "waiting for a processor" if job["state"] == "queued" else ""
    else:
        filled = min(width, width * done // total)
        unit = _UNITS.get(job["kind"], "items")
        bar, figures = "#" * filled + "-" * (width - filled), f"{done}/{total} {unit}"
    stream.write(f"\r{job['kind']} {job['target']} [{bar}] {job['state']} {figures}   ")
    stream.flush()


async def list_jobs(dsn: str, limit: int) -> list[Plain]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(f"{JOB} ORDER BY id DESC LIMIT $1", limit)
    finally:
        await conn.close()
    return [plain(r) for r in rows]


async def result(dsn: str, job_id: int) -> Plain | None:
    """What the job's run recorded in its row (reconcile, takedown), or None."""
    conn = await asyncpg.connect(dsn)
    try:
        raw = await conn.fetchval("SELECT result::text FROM admin_jobs WHERE id = $1", job_id)
    finally:
        await conn.close()
    return None if raw is None else dict(json.loads(raw))


def wait_for(dsn: str, data: Plain) -> Plain:
    """The job's final row, its progress drawn on stderr meanwhile."""
    started = time.monotonic()
    done = direct.run(lambda: watch(dsn, data["id"], stream=sys.stderr))
    done["waited_seconds"] = round(time.monotonic() - started, 1)
    return done


def projects_purge(args: Namespace, dsn: str) -> None:
    data = direct.run(lambda: queue_purge(dsn, args.project_id, dry_run=args.dry_run))
    if args.dry_run:
        emit(
            args.json,
            data,
            lambda: (
                f"Would purge projects/{args.project_id}: {data['images']} images, its keys, "
                "identities and the project itself. Nothing was changed."
            ),
        )
        return
    if not args.no_wait:
        data = wait_for(dsn, data)
    emit(args.json, data, lambda: job_text(data))
    if data["state"] == "failed":
        raise CliError(f"Job {data['id']} failed: {data['error']}")


def jobs_list(args: Namespace, dsn: str) -> None:
    data = direct.run(lambda: list_jobs(dsn, args.limit))
    emit(args.json, data, lambda: "\n".join(job_text(j) for j in data) or "No jobs.")


def job_text(job: Plain) -> str:
    progress = f"{job['done']}/{job['total']}" if job["total"] is not None else "-"
    return (
        f"job {job['id']}  {job['kind']} {job['target']}  {job['state']}  {progress}  "
        f"by {job['requested_by']}" + (f"  error: {job['error']}" if job["error"] else "")
    )
