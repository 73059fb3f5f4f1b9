"""The processor's render pieces, built from real components (Postgres, the local S3, the
isolated job runner) the way bootstrap wires them, for the render and backfill tests."""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import asyncpg

from imagery.common.db.images import PostgresImageRepository
from imagery.common.db.projects import PostgresProjects
from imagery.common.domain import ImageRecord, ImageStatus
from imagery.common.ids import new_image_id
from imagery.common.presets import Preset
from imagery.common.profiles import VariantProfile
from imagery.common.storage_keys import GLOBAL_SCOPE, upload_key
from imagery.common.tenancy import Actor, Project, ProjectSettings
from imagery.delivery.adapters.render_requests import PostgresRenderRequests as LazyAsks
from imagery.processor.adapters.postgres import PostgresOutcomes
from imagery.processor.adapters.renders import PostgresRenderRequests
from imagery.processor.adapters.s3 import S3ObjectStore
from imagery.processor.imaging import Limits, RenderSpec
from imagery.processor.ports import ImageJobs, JobResult
from imagery.processor.renderer import Renderer
from imagery.processor.use_cases.process_upload import Outcome, UploadProcessor
from imagery.processor.use_cases.render_variant import RenderVariant

ACTOR = Actor("cli:test")
# The deployment's default profile (version 0) in these tests: two small presets, so real
# jobs stay quick.
DEFAULT_PRESETS = (Preset("thumb", 32, 32, crop=True), Preset("small", 64, 64))
SPEC = RenderSpec(presets=DEFAULT_PRESETS)


class CountingJobs:
    """The real runner, counting the jobs it ran."""

    def __init__(self, jobs: ImageJobs) -> None:
        self._jobs = jobs
        self.calls = 0

    async def verify_and_render(
        self, data: bytes, content_type: str, limits: Limits, spec: RenderSpec
    ) -> JobResult:
        self.calls += 1
        return await self._jobs.verify_and_render(data, content_type, limits, spec)


async def project(
    pool: asyncpg.Pool, project_id: str, presets: Sequence[Preset] | None = None
) -> VariantProfile | None:
    """A project; with `presets`, its profile version 1 of them (lazy policy: fallback)."""
    projects = PostgresProjects(pool)
    await projects.create_project(
        Project(project_id, project_id, ProjectSettings(), secrets.token_hex(16)), ACTOR
    )
    return None if presets is None else await new_profile(pool, project_id, presets)


async def new_profile(
    pool: asyncpg.Pool, project_id: str, presets: Sequence[Preset]
) -> VariantProfile:
    updated = await PostgresProjects(pool).update_project(
        project_id,
        ACTOR,
        display_name=None,
        settings=None,
        profile=VariantProfile(0, tuple(presets)),
    )
    assert updated is not None and updated.profile is not None
    return updated.profile


async def upload(
    pool: asyncpg.Pool, store: S3ObjectStore, jobs: ImageJobs, project_id: str, body: bytes
) -> str:
    """An image of `project_id` made READY by the real processing path; its id."""
    repo = PostgresImageRepository(pool)
    image_id = new_image_id()
    key = upload_key(GLOBAL_SCOPE, image_id)
    record = ImageRecord(
        image_id, ImageStatus.PENDING, "image/jpeg", "a.jpg", key, project_id=project_id
    )
    await repo.save(principal="key:test", record=record)
    await store.put(key, body, content_type="image/jpeg")
    process = UploadProcessor(
        repo,
        PostgresOutcomes(pool),
        store,
        jobs,
        limits=Limits(),
        max_upload_bytes=10 * 1024**2,
        claim_stale_seconds=300,
        spec=SPEC,
    )
    assert (await process(image_id, key)).outcome is Outcome.READY
    return image_id


async def ask_lazily(pool: asyncpg.Pool, image_id: str, preset: str) -> None:
    """What delivery does on a lazy preset's first request: ask for it at the image's
    project's current version (delivery's own adapter)."""
    row = await pool.fetchrow(
        "SELECT r.project_id, COALESCE((p.variant_profile ->> 'version')::int, 0) AS version"
        " FROM image_records r JOIN projects p ON p.id = r.project_id WHERE r.id = $1",
        image_id,
    )
    assert row is not None
    await LazyAsks(pool).request(row["project_id"], [image_id], row["version"], preset)


async def address(pool: asyncpg.Pool, image_id: str) -> str:
    """The image's content address (where its objects live)."""
    sha: str = await pool.fetchval("SELECT sha256 FROM image_records WHERE id = $1", image_id)
    return sha


def render_variant(
    pool: asyncpg.Pool,
    store: S3ObjectStore,
    jobs: ImageJobs,
    *,
    max_attempts: int = 5,
    spec: RenderSpec = SPEC,
) -> RenderVariant:
    return RenderVariant(
        PostgresRenderRequests(pool),
        store,
        jobs,
        limits=Limits(),
        spec=spec,
        max_original_bytes=10 * 1024**2,
        max_attempts=max_attempts,
        stale_after_seconds=300,
        retry_base_seconds=1,
    )


def renderer(
    pool: asyncpg.Pool,
    store: S3ObjectStore,
    jobs: ImageJobs,
    *,
    concurrency: int = 1,
    spec: RenderSpec = SPEC,
) -> Renderer:
    return Renderer(
        PostgresRenderRequests(pool),
        render_variant(pool, store, jobs, spec=spec),
        concurrency=concurrency,
        poll_seconds=0.05,
        stale_after_seconds=300,
    )


async def variant_rows(pool: asyncpg.Pool, sha256: str) -> set[tuple[int, str, str]]:
    rows = await pool.fetch(
        "SELECT profile_version, name, format FROM image_variants WHERE sha256 = $1", sha256
    )
    return {(r[0], r[1], r[2]) for r in rows}
