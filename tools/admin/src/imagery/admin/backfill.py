"""`imagery-admin backfill`: bring a project's images to its current variant profile version.

Straight against Postgres, like `projects purge`: the work is an operator job the processor
runs (`admin_jobs`, kind "backfill"). `--dry-run` counts what it would do with the query the
job itself uses (`imagery.common.db.backfill`); otherwise the job is queued (or the one
already queued or running for the project is reused), audited, and watched until it ends."""

from __future__ import annotations

import os
from argparse import Namespace
from typing import Any

import asyncpg

from imagery.admin import direct, jobs
from imagery.admin.output import CliError, emit
from imagery.common.db.backfill import backfill_plan
from imagery.common.db.projects import audit
from imagery.common.presets import DEFAULT_PRESETS_SPEC, parse_presets
from imagery.common.profiles import default_profile, profile_from_json

Plain = dict[str, Any]

# One unfinished backfill per project (the 0011 index): asking again reuses it.
_QUEUE = """
INSERT INTO admin_jobs (kind, target, requested_by) VALUES ('backfill', $1, $2)
ON CONFLICT (kind, target) WHERE state IN ('queued', 'running')
DO UPDATE SET requested_by = admin_jobs.requested_by
RETURNING id, (xmax = 0) AS created"""


async def plan_or_queue(dsn: str, project_id: str, *, dry_run: bool) -> Plain:
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            plan = await _plan(conn, project_id)
            if dry_run:
                return {"dry_run": True, **plan}
            queued = await conn.fetchrow(_QUEUE, project_id, direct.actor().principal)
            assert queued is not None
            await audit(
                conn,
                direct.actor(),
                "project.backfill_requested",
                f"projects/{project_id}",
                project_id=project_id,
                details={
                    "job": queued["id"],
                    "profile_version": plan["profile_version"],
                    "reused": not queued["created"],
                },
            )
            job = await conn.fetchrow(f"{jobs.JOB} WHERE id = $1", queued["id"])
    finally:
        await conn.close()
    assert job is not None
    return {**jobs.plain(job), "reused": not queued["created"], "plan": plan}


async def _plan(conn: asyncpg.Connection, project_id: str) -> Plain:
    row = await conn.fetchrow(
        "SELECT deleted_at IS NULL AS live, variant_profile FROM projects WHERE id = $1",
        project_id,
    )
    if row is None:
        raise CliError(f"No project is named {project_id!r}: see `imagery-admin projects list`.")
    if not row["live"]:
        raise CliError(
            f"Project {project_id!r} is deleted: restore it before backfilling its images."
        )
    # The default profile is the deployment's VARIANT_PRESETS, read from the environment the
    # CLI runs in (the processor's, under `kubectl exec`).
    profile = profile_from_json(row["variant_profile"]) or default_profile(
        parse_presets(os.environ.get("VARIANT_PRESETS", DEFAULT_PRESETS_SPEC))
    )
    version = profile.version
    presets = [p.name for p in profile.at_ingest]
    plan = await backfill_plan(conn, project_id, version, presets)
    return {
        "project": project_id,
        "profile_version": version,
        "default_profile": version == 0,
        "images": plan.images,
        "blobs": plan.contents,
        "renders": plan.renders,
        "blobs_total": plan.total,
        "blobs_at_version": plan.done,
    }


def backfill(args: Namespace, dsn: str) -> None:
    project = args.project
    data = direct.run(lambda: plan_or_queue(dsn, project, dry_run=args.dry_run))
    if args.dry_run:
        emit(args.json, data, lambda: _plan_text(data))
        return
    if not args.no_wait:
        data = {**jobs.wait_for(dsn, data), "reused": data["reused"], "plan": data["plan"]}
    emit(args.json, data, lambda: _result_text(data))
    if data["state"] == "failed":
        raise CliError(f"Job {data['id']} failed: {data['error']}")


def _plan_text(plan: Plain) -> str:
    version = plan["profile_version"]
    if plan["default_profile"]:
        target, due = "the deployment's default profile (version 0)", "missing one of its presets"
    else:
        target, due = f"profile version {version}", "below it"
    return (
        f"Would backfill projects/{plan['project']} to {target}: "
        f"{plan['images']} images on {plan['blobs']} blobs {due}, {plan['renders']} renders "
        f"({plan['blobs_at_version']} of {plan['blobs_total']} blobs are at it already). "
        "Nothing was changed."
    )


def _result_text(job: Plain) -> str:
    version = job.get("profile_version")
    if job["state"] not in ("done", "failed"):
        again = "already " if job["reused"] else ""
        return (
            f"Backfill of projects/{job['target']} {again}queued as job {job['id']}: "
            "follow it with `imagery-admin jobs list`."
        )
    return (
        f"Backfill of projects/{job['target']} to profile version {version} {job['state']}: "
        f"{job['blobs_moved']} blobs brought to version {version} "
        f"({job['done']} of {job['total']} at it now), {job['renders_made']} renders made, "
        f"{job['renders_failed']} failed."
    )
