"""The services' Postgres roles as docs/deploy.md grants them (section 3, step 2), on a real
Postgres: what each service writes works under its own role, quota admission and the usage
triggers included (they run as the migrating role, so the services need no privilege on
project_usage beyond upload's SELECT)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from imagery.common.db.images import PostgresImageRepository
from imagery.common.db.projects import PostgresProjects
from imagery.common.db.upload_requests import PostgresUploadRequests
from imagery.common.errors import QuotaExceeded
from imagery.common.presets import Preset
from imagery.common.profiles import VariantProfile, profile_from_json
from imagery.common.quotas import Quotas
from imagery.common.request_ids import UsedRequestId
from imagery.common.tenancy import Actor
from tests.fakes import pending_record

pytestmark = pytest.mark.integration
ROLES = ("imagery_upload", "imagery_processor", "imagery_delivery")
DEPLOY = Path(__file__).resolve().parents[2] / "docs/deploy.md"


def _grants() -> str:
    found = re.findall(r"```sql\n(BEGIN;\nREVOKE ALL ON .*?COMMIT;)\n```", DEPLOY.read_text(), re.S)
    assert len(found) == 1, "docs/deploy.md has one table-grants block"
    return str(found[0])


def _as(dsn: str, role: str) -> str:
    parts = urlsplit(dsn)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{role}@{host}"))


@pytest.fixture
async def roles(database_url: str) -> AsyncIterator[dict[str, asyncpg.Pool]]:
    conn = await asyncpg.connect(database_url)
    try:
        for role in ROLES:
            await conn.execute(
                f"DO $$ BEGIN CREATE ROLE {role} LOGIN; EXCEPTION WHEN duplicate_object THEN"
                " NULL; END $$"
            )
        database = await conn.fetchval("SELECT current_database()")
        await conn.execute(f'GRANT CONNECT ON DATABASE "{database}" TO {", ".join(ROLES)}')
        await conn.execute(f"GRANT USAGE ON SCHEMA public TO {', '.join(ROLES)}")
        await conn.execute(_grants())
    finally:
        await conn.close()
    pools = {
        r: await asyncpg.create_pool(_as(database_url, r), min_size=1, max_size=2) for r in ROLES
    }
    yield pools
    for pool in pools.values():
        await pool.close()


async def test_each_service_writes_what_it_must_under_its_own_role(
    roles: dict[str, asyncpg.Pool],
) -> None:
    upload = PostgresImageRepository(roles["imagery_upload"])
    quotas = Quotas(images=2)
    kept, ready, failed = pending_record(10), pending_record(10), pending_record(10)
    await upload.save(kept, principal="key:test", quotas=quotas)
    await upload.save(ready, principal="key:test")
    with pytest.raises(QuotaExceeded):
        await upload.save(failed, principal="key:test", quotas=quotas)
    await upload.save(failed, principal="key:test")

    processor = roles["imagery_processor"]
    await processor.execute(
        "UPDATE image_records SET status = 'ready', size_bytes = 5 WHERE id = $1", ready.id
    )
    await processor.execute(
        "UPDATE image_records SET status = 'failed', failure_reason = 'CORRUPT' WHERE id = $1",
        failed.id,
    )
    assert await upload.delete("default", kept.id, principal="key:test") is not None
    usage = await roles["imagery_upload"].fetchrow(
        "SELECT images, bytes FROM project_usage WHERE project_id = 'default'"
    )
    assert dict(usage or {}) == {"images": 1, "bytes": 5}
    await processor.execute("DELETE FROM image_records WHERE id = $1", ready.id)  # the purge
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await roles["imagery_delivery"].execute("UPDATE project_usage SET images = 0")


async def test_labels_request_ids_and_their_pruning_work_under_the_roles(
    roles: dict[str, asyncpg.Pool], pool: asyncpg.Pool
) -> None:
    """UpdateImage and CreateUploadUrl's request ids as upload (new, kept, and an expired one
    replaced), the processor's prune of expired ids; delivery sees none of them."""
    upload = roles["imagery_upload"]
    requests, images = PostgresUploadRequests(upload), PostgresImageRepository(upload)
    first = replace(pending_record(10), labels={"team": "web"})
    quotas = Quotas(images=10)
    assert await requests.save_once(first, "req", "f", principal="key:t", quotas=quotas) is None
    retry = await requests.save_once(pending_record(), "req", "f", principal="key:t")
    assert retry == UsedRequestId("f", first.id, first.object_key)
    age = "UPDATE upload_requests SET created_at = now() - interval '25 hours'"
    await pool.execute(age)  # the migrating role plays the passing day
    later = pending_record()
    assert await requests.save_once(later, "req", "g", principal="key:t") is None
    updated = await images.update_labels("default", first.id, {"team": "app"}, principal="key:t")
    assert updated is not None and updated.labels == {"team": "app"}

    await pool.execute(age)
    await requests.save_once(pending_record(), "fresh", "f", principal="key:t")
    assert await PostgresUploadRequests(roles["imagery_processor"]).prune() == 1
    assert await pool.fetchval("SELECT array_agg(request_id) FROM upload_requests") == ["fresh"]
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await roles["imagery_delivery"].fetch("SELECT * FROM upload_requests")


async def test_profile_versions_under_the_roles(roles: dict[str, asyncpg.Pool]) -> None:
    """UpdateProject's new profile version as upload; the project, profile included, as the
    processor and delivery read it; nobody may rewrite a version."""
    upload = PostgresProjects(roles["imagery_upload"])
    profile = VariantProfile(0, (Preset("card", 300, 200, crop=True),))
    first = await upload.update_project(
        "default", Actor("key:t"), display_name=None, settings=None, profile=profile
    )
    second = await upload.update_project(
        "default", Actor("key:t"), display_name=None, settings=None, profile=profile
    )
    assert first is not None and first.profile is not None and first.profile.version == 1
    assert second is not None and second.profile is not None and second.profile.version == 2
    assert [p.version for p in await upload.profile_versions("default")] == [1, 2]
    for role in ("imagery_processor", "imagery_delivery"):  # with the record, with the key
        read = await roles[role].fetchval(
            "SELECT variant_profile FROM projects WHERE id = $1", "default"
        )
        assert profile_from_json(read) == second.profile
    for role in ROLES:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await roles[role].execute("UPDATE variant_profiles SET profile = '{}'")


async def test_render_asks_and_backfills_under_the_roles(
    roles: dict[str, asyncpg.Pool], pool: asyncpg.Pool
) -> None:
    """Delivery asks for a lazy render (twice: one row); the processor claims and answers it
    (variant rows, the content's version, the change-bus notice) and runs a backfill job's
    steps; delivery can neither read the asks beyond their key nor change them."""
    from imagery.common.domain import VariantInfo
    from imagery.delivery.adapters.render_requests import PostgresRenderRequests as Asks
    from imagery.processor.adapters.admin_jobs import PostgresAdminJobs
    from imagery.processor.adapters.backfills import PostgresBackfills
    from imagery.processor.adapters.renders import PostgresRenderRequests

    sha = "c" * 64
    await pool.execute(
        "INSERT INTO image_blobs (sha256, format, width, height, size_bytes, reference_count,"
        " stored_at) VALUES ($1, 'jpeg', 10, 10, 100, 1, now())",
        sha,
    )
    record = pending_record(100)
    await PostgresImageRepository(roles["imagery_upload"]).save(record, principal="key:t")
    await pool.execute(
        "UPDATE image_records SET status = 'ready', sha256 = $2 WHERE id = $1", record.id, sha
    )
    delivery = roles["imagery_delivery"]
    for _ in range(2):
        await Asks(delivery).request("default", [record.id, record.id], 0, "large")
    assert await pool.fetchval("SELECT count(*) FROM render_requests") == 1
    for refused in (
        "SELECT sha256 FROM render_requests",
        "UPDATE render_requests SET attempts = 0",
        "DELETE FROM render_requests",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await delivery.execute(refused)

    processor = roles["imagery_processor"]
    requests = PostgresRenderRequests(processor)
    claimed = await requests.claim(stale_after_seconds=300)
    assert claimed is not None and (claimed.preset, claimed.attempts) == ("large", 1)
    assert await requests.source(claimed) is not None
    assert not await requests.covered(claimed, 0)
    await requests.retry_later(claimed, after_seconds=0, stale_after_seconds=300)
    again = await requests.claim(stale_after_seconds=300)
    assert again is not None
    await requests.release(again)
    again = await requests.claim(stale_after_seconds=300)
    assert again is not None
    variant = VariantInfo("large", "webp", "image/webp", 10, 10, 5, f"variants/{sha}/large.webp")
    assert await requests.complete(again, 0, [variant], [("large", "webp")]) is False, (
        "at version 0 already: nothing to move"
    )
    assert await pool.fetchval("SELECT count(*) FROM render_requests") == 0

    await processor.execute(
        "INSERT INTO admin_jobs (kind, target, requested_by) VALUES ('backfill', 'default', 'x')"
    )
    job = await PostgresAdminJobs(processor).claim(stale_after_seconds=300)
    assert job is not None and job.kind == "backfill"
    await pool.execute("UPDATE image_blobs SET profile_version = 0")
    backfills = PostgresBackfills(processor)
    assert await backfills.current_profile(job) == (True, None)
    assert await backfills.begin(job, 1) == ""
    batch = await backfills.enqueue(job, version=1, after="", limit=10, presets=[Preset("x", 1, 1)])
    assert batch is not None and (batch.contents, batch.renders) == (1, 1)
    assert await backfills.pending(job) == 1
    assert await backfills.progress(job, VariantProfile(1, (Preset("x", 1, 1),)))
    asked = await processor.fetchval("SELECT claimed_at IS NULL FROM render_requests")
    assert asked is True
    dropped = await requests.claim(stale_after_seconds=300)
    assert dropped is not None
    await requests.drop(dropped, failed=True)
    assert await pool.fetchval("SELECT failed FROM admin_jobs") == 1


async def test_delivery_reads_images_as_its_rpcs_do_under_its_role(
    roles: dict[str, asyncpg.Pool], pool: asyncpg.Pool
) -> None:
    """GetImage, BatchGetImages, ListImages and the URL RPCs' reads, as imagery_delivery."""
    from imagery.common.db.listing import PostgresImageListing

    upload = PostgresImageRepository(roles["imagery_upload"])
    record = pending_record()
    await upload.save(record, principal="key:test")
    delivery = roles["imagery_delivery"]
    found = await PostgresImageRepository(delivery).find_by_id("default", record.id)
    assert found is not None and found.profile_version == 0
    assert [
        r.id for r in await PostgresImageRepository(delivery).find_many("default", [record.id])
    ] == [record.id]
    page = await PostgresImageListing(delivery).list_page("default", None, None, 10)
    assert record.id in {r.id for r in page}
    targets = await PostgresImageRepository(delivery).find_download_targets(
        "default", [record.id], "small", ["webp"]
    )
    assert [t.image_id for t in targets] == [record.id]
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await delivery.fetch("SELECT reference_count FROM image_blobs")


async def test_retention_prunes_every_table_under_the_processor_role(
    roles: dict[str, asyncpg.Pool], database_url: str
) -> None:
    from imagery.common.db.schema import pending_migrations
    from imagery.processor.adapters.retention import PostgresRetention
    from imagery.processor.ports import RetentionRule
    from imagery.processor.use_cases.prune_retained import PruneRetained
    from tests.integration.test_retention import _audit, _deletion, _image, _job

    owner = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        old = [
            await _audit(owner, 500),
            await _deletion(owner, 5),
            await _image(owner, "failed", 60),
            await _job(owner, "done", 120),
        ]
        recent = await _audit(owner, 10)
    finally:
        await owner.close()
    rules = [
        RetentionRule("audit_events", 1),  # asks for too little: the function keeps 30 days
        RetentionRule("image_deletions", 1),
        RetentionRule("failed_images", 30),
        RetentionRule("admin_jobs", 90),
    ]
    sweep = PruneRetained(PostgresRetention(roles["imagery_processor"]), rules)
    pruned = await sweep()
    assert pruned == {rule.table: 1 for rule in rules}, f"every table pruned: {pruned} ({old})"
    with pytest.raises(asyncpg.InsufficientPrivilegeError):  # only through the function
        await roles["imagery_processor"].execute("DELETE FROM audit_events")
    conn = await asyncpg.connect(database_url)
    try:
        kept = await conn.fetchval("SELECT count(*) FROM audit_events WHERE id = $1", recent)
    finally:
        await conn.close()
    assert kept == 1, "an event younger than 30 days stays, whatever the processor asks"
    for role in ROLES:  # and each service can tell whether the schema is complete
        assert await pending_migrations(roles[role]) == []
