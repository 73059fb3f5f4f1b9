"""`imagery-admin backfill` as an operator runs it: the installed command in a subprocess,
against real Postgres, with the processor's operator jobs and renderer running on the local
S3 and the isolated job runner."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from imagery.common.presets import Preset
from imagery.processor.adapters.admin_jobs import PostgresAdminJobs
from imagery.processor.adapters.backfills import PostgresBackfills
from imagery.processor.adapters.isolation import IsolatedRunner
from imagery.processor.adapters.s3 import S3ObjectStore
from imagery.processor.use_cases.backfill import Backfill
from imagery.processor.use_cases.run_admin_jobs import RunAdminJobs
from tests import images
from tests.integration.test_admin_cli import Run, admin, one_line
from tests.render_stack import DEFAULT_PRESETS, new_profile, project, renderer, upload

pytestmark = pytest.mark.integration
TEAM = "cli-team"


async def _changes(pool: asyncpg.Pool) -> tuple[int, ...]:
    row = await pool.fetchrow(
        """SELECT (SELECT count(*) FROM admin_jobs), (SELECT count(*) FROM render_requests),
                  (SELECT count(*) FROM audit_events), (SELECT count(*) FROM image_variants),
                  (SELECT sum(profile_version) FROM image_blobs)"""
    )
    assert row is not None
    return tuple(row)


async def _with_a_processor(
    pool: asyncpg.Pool, store: S3ObjectStore, runner: IsolatedRunner, *args: str, dsn: str
) -> Run:
    """Run the command while a processor runs operator jobs and renders."""
    jobs = PostgresAdminJobs(pool)
    backfill = Backfill(
        PostgresBackfills(pool), jobs, DEFAULT_PRESETS, per_minute=60_000, poll_seconds=0.05
    )
    stop = asyncio.Event()

    async def a_processor() -> None:
        rendering = asyncio.create_task(renderer(pool, store, runner).run(stop, grace_seconds=5))
        while not stop.is_set():
            await RunAdminJobs(jobs, store, backfill=backfill)()
            await asyncio.sleep(0.05)
        await rendering

    processor = asyncio.create_task(a_processor())
    try:
        return await admin(*args, database_url=dsn)
    finally:
        stop.set()
        await processor


async def test_backfill_counts_in_a_dry_run_then_runs_to_the_end_with_its_counts(
    pool: asyncpg.Pool, database_url: str, store: S3ObjectStore, runner: IsolatedRunner
) -> None:
    await project(pool, TEAM)
    for i in range(3):
        await upload(pool, store, runner, TEAM, images.jpeg(120 + i, 90))
    stack = "thumb:32x32:crop,small:64x64"  # the presets the images were rendered with
    default = await admin(
        "backfill", "--project", TEAM, "--dry-run", database_url=database_url, VARIANT_PRESETS=stack
    )
    assert default.code == 0, default.err
    assert "to the deployment's default profile (version 0): 0 images on 0 blobs" in default.out
    grown = await admin(
        "backfill",
        "--project",
        TEAM,
        "--dry-run",
        database_url=database_url,
        VARIANT_PRESETS=f"{stack},square:40x40:crop",
    )
    assert grown.code == 0, grown.err
    assert "3 images on 3 blobs missing one of its presets, 3 renders" in grown.out, grown.out
    bad = await admin(
        "backfill", "--project", TEAM, "--dry-run", database_url=database_url, VARIANT_PRESETS="x"
    )
    assert bad.code == 1 and "VARIANT_PRESETS entry 'x'" in bad.err, bad.err
    await new_profile(pool, TEAM, [Preset("small", 64, 64, quality=70), Preset("wide", 90, 40)])
    before = await _changes(pool)

    dry = await admin("backfill", "--project", TEAM, "--dry-run", database_url=database_url)
    assert dry.code == 0, dry.err
    assert "to profile version 1: 3 images on 3 blobs below it, 6 renders" in dry.out
    assert "Nothing was changed." in dry.out
    dry_json = await admin(
        "backfill", "--project", TEAM, "--dry-run", "--json", database_url=database_url
    )
    plan = dry_json.json()
    assert (plan["images"], plan["blobs"], plan["renders"], plan["blobs_at_version"]) == (
        3,
        3,
        6,
        0,
    )
    assert await _changes(pool) == before, "a dry run changes nothing"

    run = await _with_a_processor(
        pool, store, runner, "backfill", "--project", TEAM, "--json", dsn=database_url
    )
    assert run.code == 0, run.err
    job = run.json()
    assert (job["state"], job["profile_version"], job["total"], job["done"]) == ("done", 1, 3, 3)
    assert (job["blobs_moved"], job["renders_made"], job["renders_failed"]) == (3, 6, 0)
    assert job["reused"] is False
    assert "3/3 blobs" in run.err, "the progress bar, on stderr"
    assert await pool.fetchval("SELECT count(*) FROM image_blobs WHERE profile_version = 1") == 3

    again = await _with_a_processor(
        pool, store, runner, "backfill", "--project", TEAM, dsn=database_url
    )
    assert again.code == 0, again.err
    assert again.out.strip() == (
        f"Backfill of projects/{TEAM} to profile version 1 done: 0 blobs brought to version 1 "
        "(3 of 3 at it now), 0 renders made, 0 failed."
    )
    requested = await pool.fetch(
        "SELECT principal, details FROM audit_events WHERE action = 'project.backfill_requested'"
    )
    assert len(requested) == 2 and all(r["principal"].startswith("cli:") for r in requested)


async def test_a_backfill_already_queued_is_reused_and_bad_projects_are_refused(
    pool: asyncpg.Pool, database_url: str
) -> None:
    await project(pool, TEAM, [Preset("small", 64, 64)])
    first = await admin("backfill", "--project", TEAM, "--no-wait", database_url=database_url)
    second = await admin(
        "backfill", "--project", TEAM, "--no-wait", "--json", database_url=database_url
    )
    assert first.code == second.code == 0, first.err + second.err
    assert "queued as job" in first.out
    assert second.json()["reused"] is True and second.json()["state"] == "queued"
    assert await pool.fetchval("SELECT count(*) FROM admin_jobs") == 1
    unknown = await admin("backfill", "--project", "nobody", database_url=database_url)
    assert unknown.code == 1 and "No project is named 'nobody'" in one_line(unknown)
