"""Projects never share: identical bytes uploaded by two projects at the same time become two
READY records on two contents (rows and objects), a lookup in one project never finds the
other's image, and deleting one leaves the other whole. Real Postgres and S3; the job runs
in process (its isolation is tested elsewhere)."""

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
from imagery.common.domain import ImageRecord, ImageStatus
from imagery.common.ids import new_image_id
from imagery.common.storage_keys import GLOBAL_SCOPE, original_key, upload_key
from imagery.common.tenancy import DEFAULT_PROJECT, Actor, Project, ProjectSettings
from imagery.processor.adapters.postgres import PostgresOutcomes
from imagery.processor.adapters.s3 import S3ObjectStore
from imagery.processor.imaging import Limits
from imagery.processor.use_cases.process_upload import Outcome, UploadProcessor
from tests import images
from tests.fakes import InlineJobs
from tests.principals import policy

pytestmark = pytest.mark.integration
TEAM = "team-b"


@pytest.fixture
async def store(aws_settings: AwsSettings) -> AsyncIterator[S3ObjectStore]:
    async with s3_client(aws_settings) as client:
        yield S3ObjectStore(client, aws_settings.bucket)


@pytest.fixture
async def team(pool: asyncpg.Pool) -> Project:
    project = Project(TEAM, "Team B", ProjectSettings(), secrets.token_hex(16))
    return await PostgresProjects(pool).create_project(project, Actor("cli:test"))


async def _pending(repo: PostgresImageRepository, store: S3ObjectStore, project: str) -> str:
    image_id = new_image_id()
    key = upload_key(GLOBAL_SCOPE, image_id)
    record = ImageRecord(
        image_id, ImageStatus.PENDING, "image/jpeg", "a.jpg", key, project_id=project
    )
    await repo.save(record, principal="key:test")
    await store.put(key, BODY, content_type="image/jpeg")
    return image_id


BODY = images.jpeg(48, 32)


async def test_identical_bytes_in_two_projects_stay_apart_through_deletion(
    pool: asyncpg.Pool, store: S3ObjectStore, team: Project
) -> None:
    repo = PostgresImageRepository(pool)
    process = UploadProcessor(
        repo,
        PostgresOutcomes(pool),
        store,
        InlineJobs(),
        limits=Limits(),
        max_upload_bytes=10_000_000,
        claim_stale_seconds=300,
        policy=policy(),
    )
    mine = await _pending(repo, store, DEFAULT_PROJECT)
    theirs = await _pending(repo, store, TEAM)
    results = await asyncio.gather(
        process(mine, upload_key(GLOBAL_SCOPE, mine)),
        process(theirs, upload_key(GLOBAL_SCOPE, theirs)),
    )
    assert [r.outcome for r in results] == [Outcome.READY, Outcome.READY]

    a = await repo.find_by_id(DEFAULT_PROJECT, mine)
    b = await repo.find_by_id(TEAM, theirs)
    assert a is not None and b is not None
    assert a.sha256 == b.sha256, "each reports the SHA-256 of its bytes"
    assert a.content != b.content, "but they are two contents"
    counts: dict[str, int] = dict(
        await pool.fetch(  # type: ignore[arg-type]
            "SELECT sha256, reference_count FROM image_blobs WHERE sha256 = ANY($1::text[])",
            [a.content, b.content],
        )
    )
    assert counts == {a.content: 1, b.content: 1}
    assert {v.key for v in a.variants}.isdisjoint(v.key for v in b.variants)

    assert await repo.find_by_id(TEAM, mine) is None, "another project's id is not found"
    assert await repo.find_download_targets(TEAM, [mine], "small", ["webp"]) == []
    assert await repo.delete(TEAM, mine, principal="key:test") is None

    assert await repo.delete(DEFAULT_PROJECT, mine, principal="key:test") is not None
    left = await pool.fetchval(
        "SELECT reference_count FROM image_blobs WHERE sha256 = $1", b.content
    )
    assert left == 1, "their content keeps its reference"
    (target,) = await repo.find_download_targets(TEAM, [theirs], "small", ["webp"])
    assert target.servable
    assert b.content is not None
    for key in [original_key(GLOBAL_SCOPE, b.content), *(v.key for v in b.variants)]:
        assert await store.head(key) is not None, f"{key} is still stored"


async def test_every_change_is_audited_without_secrets(
    pool: asyncpg.Pool, store: S3ObjectStore, team: Project
) -> None:
    repo = PostgresImageRepository(pool)
    image_id = await _pending(repo, store, TEAM)
    await repo.delete(TEAM, image_id, principal="key:abc")
    projects = PostgresProjects(pool)
    made = await projects.create_key(
        TEAM, Actor("key:admin", "ab" * 16), display_name="ci", scopes=[], expire_time=None
    )
    assert made is not None
    events = await projects.audit_events(project_id=TEAM, limit=10)
    actions = [(e.action, e.principal, e.outcome) for e in reversed(events)]
    assert actions == [
        ("project.create", "cli:test", "ok"),
        ("image.create", "key:test", "ok"),
        ("image.delete", "key:abc", "ok"),
        ("api_key.create", "key:admin", "ok"),
    ]
    assert events[0].trace_id == "ab" * 16
    dumped = str([e.details for e in events]) + str(await pool.fetch("SELECT * FROM audit_events"))
    assert made[0].secret not in dumped and made[0].secret_hash.hex() not in dumped
