"""Operator jobs run by the processor, against real Postgres and S3: a deleted project past
its retention is purged (its images as DeleteImage removes them, its credentials, the row),
others are untouched, a job is taken by one processor at a time and resumes after a crash."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import asyncpg
import pytest

from imagery.common.aws.clients import s3_client
from imagery.common.config import AwsSettings
from imagery.common.db.images import PostgresImageRepository
from imagery.common.db.projects import PostgresProjects
from imagery.common.tenancy import DEFAULT_PROJECT, IMAGE_SCOPES, Actor, Project, ProjectSettings
from imagery.devstack.aws import AwsResources
from imagery.devstack.fixtures import seed_ready_images, seed_record
from imagery.processor.adapters.admin_jobs import PostgresAdminJobs
from imagery.processor.adapters.s3 import S3ObjectStore
from imagery.processor.use_cases.run_admin_jobs import RunAdminJobs

pytestmark = pytest.mark.integration
GONE, KEPT = "gone-team", "kept-team"


@pytest.fixture
async def store(aws_settings: AwsSettings) -> AsyncIterator[S3ObjectStore]:
    async with s3_client(aws_settings) as client:
        yield S3ObjectStore(client, aws_settings.bucket)


async def _project(pool: asyncpg.Pool, project_id: str) -> str:
    projects, actor = PostgresProjects(pool), Actor("cli:test")
    await projects.create_project(
        Project(project_id, project_id, ProjectSettings(), secrets.token_hex(16)), actor
    )
    made = await projects.bootstrap_key(project_id, actor, key_name="k", scopes=IMAGE_SCOPES)
    await projects.map_identity(f"spiffe://x/{project_id}", project_id, IMAGE_SCOPES, actor)
    return made.key_id


async def test_a_deleted_project_is_purged_after_its_retention_and_nothing_else(
    pool: asyncpg.Pool, database_url: str, aws: AwsResources, store: S3ObjectStore
) -> None:
    await _project(pool, GONE)
    await _project(pool, KEPT)
    gone = await seed_ready_images(database_url, aws, 7, put_objects=False, project_id=GONE)
    pending = await seed_record(database_url, "pending", project_id=GONE)
    await store.put(f"uploads/{pending}", b"bytes", content_type="image/png")
    kept = await seed_ready_images(database_url, aws, 3, put_objects=False, project_id=KEPT)
    mine = await seed_ready_images(database_url, aws, 2, put_objects=False)
    projects = PostgresProjects(pool)
    await projects.delete_project(GONE, Actor("key:admin"), retention_seconds=3600)
    await projects.delete_project(KEPT, Actor("key:admin"), retention_seconds=3600)
    run = RunAdminJobs(PostgresAdminJobs(pool), store, batch=3)

    assert await run() == 0, "nothing is due before the retention is over"
    await pool.execute("UPDATE projects SET purge_time = now() WHERE id = $1", GONE)
    assert await run() == 1

    assert await pool.fetchval("SELECT count(*) FROM projects WHERE id = $1", GONE) == 0
    left = await pool.fetchrow(
        """SELECT (SELECT count(*) FROM api_keys WHERE project_id = $1),
                  (SELECT count(*) FROM client_identities WHERE project_id = $1),
                  (SELECT count(*) FROM image_records WHERE project_id = $1)""",
        GONE,
    )
    assert left is not None and tuple(left) == (0, 0, 0), "keys, identities and images"
    unreferenced = await pool.fetchval("SELECT count(*) FROM image_blobs WHERE reference_count = 0")
    assert unreferenced == 7, "their content is left to the collector, like any deletion"
    assert await store.head(f"uploads/{pending}") is None, "the pending upload's bytes went"
    repo = PostgresImageRepository(pool)
    assert len(await repo.find_download_targets(KEPT, kept, "small", ["webp"])) == 3
    assert len(await repo.find_download_targets(DEFAULT_PROJECT, mine, "small", ["webp"])) == 2
    job = await pool.fetchrow("SELECT state, total, done_count FROM admin_jobs")
    assert job is not None and tuple(job) == ("done", 8, 8)
    actions = await pool.fetch(
        "SELECT action, principal FROM audit_events WHERE action = 'project.purge'"
    )
    assert [tuple(a) for a in actions] == [("project.purge", "system:processor")]
    deleted = await pool.fetchval(
        "SELECT count(*) FROM image_deletions WHERE image_id = ANY($1::text[])", gone
    )
    assert deleted == 7, "delivery replicas of the previous release hear of it too"


async def test_one_job_is_run_by_one_processor_and_resumes_after_a_crash(
    pool: asyncpg.Pool, database_url: str, aws: AwsResources, store: S3ObjectStore
) -> None:
    await _project(pool, GONE)
    await seed_ready_images(database_url, aws, 4, put_objects=False, project_id=GONE)
    await PostgresProjects(pool).delete_project(GONE, Actor("key:a"), retention_seconds=0)
    jobs = PostgresAdminJobs(pool)
    await jobs.enqueue_due_purges()
    await jobs.enqueue_due_purges()
    assert await pool.fetchval("SELECT count(*) FROM admin_jobs") == 1, "queued once"
    claims = await asyncio.gather(*(jobs.claim(stale_after_seconds=300) for _ in range(4)))
    assert len([c for c in claims if c is not None]) == 1, "SKIP LOCKED: one taker"
    # its processor died holding it: another takes it over once the heartbeat is stale
    assert await RunAdminJobs(jobs, store, stale_after_seconds=300)() == 0
    await pool.execute("UPDATE admin_jobs SET heartbeat_at = now() - interval '10 minutes'")
    assert await RunAdminJobs(jobs, store, stale_after_seconds=300)() == 1
    assert await pool.fetchval("SELECT state FROM admin_jobs") == "done"
    assert await pool.fetchval("SELECT count(*) FROM image_records") == 0
