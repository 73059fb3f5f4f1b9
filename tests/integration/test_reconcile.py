"""The reconciler against real Postgres and the local S3: orphans go after their grace, lost
variants come back from the kept original, content with nothing left is never served."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from PIL import Image

from imagery.common.db.images import PostgresImageRepository
from imagery.common.domain import ImageRecord, ImageStatus
from imagery.common.ids import new_image_id
from imagery.common.presets import Preset
from imagery.common.storage_keys import GLOBAL_SCOPE, original_key, upload_key, variant_key
from imagery.common.tenancy import DEFAULT_PROJECT
from imagery.processor.adapters.isolation import IsolatedRunner
from imagery.processor.adapters.postgres import PostgresContentInventory, PostgresOutcomes
from imagery.processor.adapters.renders import PostgresRenderRequests
from imagery.processor.adapters.s3 import S3ObjectStore
from imagery.processor.imaging import Limits, RenderSpec
from imagery.processor.ports import VerifiedImage
from imagery.processor.use_cases.process_upload import Outcome, UploadProcessor
from imagery.processor.use_cases.reconcile import Reconciler
from imagery.processor.use_cases.render_variant import RenderOutcome
from tests import images
from tests.fakes import InlineJobs
from tests.render_stack import (
    SPEC,
    address,
    ask_lazily,
    new_profile,
    project,
    render_variant,
    upload,
    variant_rows,
)

pytestmark = pytest.mark.integration
LATER = datetime.now(UTC) + timedelta(hours=2)  # every object written now is past its grace


def _reconciler(pool: asyncpg.Pool, store: S3ObjectStore, *, now: datetime = LATER) -> Reconciler:
    return Reconciler(
        store,
        PostgresContentInventory(pool),
        store,
        InlineJobs(),
        grace_seconds=3600,
        limits=Limits(),
        spec=RenderSpec(),
        max_original_bytes=10 * 1024**2,
        clock=lambda: now,
    )


async def _ready(pool: asyncpg.Pool, store: S3ObjectStore, body: bytes) -> ImageRecord:
    """An image made READY by the real processing path."""
    repo = PostgresImageRepository(pool)
    image_id = new_image_id()
    key = upload_key(GLOBAL_SCOPE, image_id)
    await repo.save(
        principal="key:test",
        record=ImageRecord(image_id, ImageStatus.PENDING, "image/jpeg", "a.jpg", key),
    )
    await store.put(key, body, content_type="image/jpeg")
    process = UploadProcessor(
        repo,
        PostgresOutcomes(pool),
        store,
        InlineJobs(),
        limits=Limits(),
        max_upload_bytes=10 * 1024**2,
        claim_stale_seconds=300,
    )
    assert (await process(image_id, key)).outcome is Outcome.READY
    record = await repo.find_by_id(DEFAULT_PROJECT, image_id)
    assert record is not None and record.sha256 is not None
    return record


async def test_orphans_go_after_their_grace_and_a_dry_run_only_reports(
    pool: asyncpg.Pool, store: S3ObjectStore
) -> None:
    kept = await _ready(pool, store, images.jpeg(40, 30))
    stray_sha = "e" * 64
    strays = [
        original_key(GLOBAL_SCOPE, stray_sha),
        variant_key(GLOBAL_SCOPE, stray_sha, "small", "webp"),
        upload_key(GLOBAL_SCOPE, new_image_id()),  # an upload nobody created a record for
    ]
    for key in strays:
        await store.put(key, b"stray", content_type="image/webp")

    young = await _reconciler(pool, store, now=datetime.now(UTC)).run()
    assert young.orphans_deleted == [], "within the grace: perhaps a write in progress"
    dry = await _reconciler(pool, store).run(dry_run=True)
    assert sorted(dry.orphans_deleted) == sorted(strays)
    assert all([await store.head(k) for k in strays]), "a dry run deletes nothing"
    done = await _reconciler(pool, store).run()
    assert sorted(done.orphans_deleted) == sorted(strays)
    assert [await store.head(k) for k in strays] == [None, None, None]
    assert all([await store.head(v.key) for v in kept.variants]), "what a row needs stays"


async def test_a_lost_variant_is_rendered_again_from_the_kept_original(
    pool: asyncpg.Pool, store: S3ObjectStore
) -> None:
    record = await _ready(pool, store, images.jpeg(60, 40))
    lost = record.variants[0].key
    await store.delete(lost)
    report = await _reconciler(pool, store).run()
    assert report.variants_rebuilt == [lost]
    assert await store.head(lost) is not None


async def test_content_with_nothing_left_is_never_served_and_comes_back_with_its_bytes(
    pool: asyncpg.Pool, store: S3ObjectStore
) -> None:
    body = images.jpeg(50, 30)
    record = await _ready(pool, store, body)
    assert record.sha256 is not None
    for key in [original_key(GLOBAL_SCOPE, record.sha256), *(v.key for v in record.variants)]:
        await store.delete(key)  # a local S3 that started empty
    report = await _reconciler(pool, store).run()
    assert report.content_lost == [record.sha256]
    repo = PostgresImageRepository(pool)
    (target,) = await repo.find_download_targets(DEFAULT_PROJECT, [record.id], "small", ["webp"])
    assert not target.servable, "never signed for objects that are gone"
    again = await _ready(pool, store, body)
    assert again.sha256 == record.sha256
    (target,) = await repo.find_download_targets(DEFAULT_PROJECT, [record.id], "small", ["webp"])
    assert target.servable, "the same bytes stored it again, for the old image too"
    assert await store.head(target.key or "") is not None


async def test_an_upload_of_the_same_bytes_waits_while_orphans_are_deleted(
    pool: asyncpg.Pool,
) -> None:
    inventory, outcomes = PostgresContentInventory(pool), PostgresOutcomes(pool)
    sha = "d" * 64
    claimed = await inventory.claim_orphans(sha)
    assert claimed is not None
    assert await inventory.claim_orphans(sha) is None, "one claim at a time"
    async with outcomes.unit_of_work() as uow:
        linked = await uow.link_stored_content(sha, "jpeg")
        reserved = await uow.reserve_content(VerifiedImage(sha, "jpeg", 1, 1, 1), ())
    assert (linked.collecting, linked.mismatch, reserved) == (True, None, None), "it waits"
    await inventory.release_orphans(sha, claimed)
    async with outcomes.unit_of_work() as uow:
        assert await uow.reserve_content(VerifiedImage(sha, "jpeg", 1, 1, 1), ()) is not None


async def test_a_lost_variant_of_a_later_profile_version_comes_back_at_its_own_key(
    pool: asyncpg.Pool, store: S3ObjectStore, runner: IsolatedRunner
) -> None:
    """A project on profile version 2 (its `small` is 64 px, its `large` lazy and rendered on
    request): both come back with version 2's presets, at version 2's keys, still served."""
    small, large = Preset("small", 64, 64), Preset("large", 200, 200, lazy=True)
    await project(pool, "reconciled", [Preset("small", 32, 32)])
    await new_profile(pool, "reconciled", [small, large])
    image_id = await upload(pool, store, runner, "reconciled", images.jpeg(300, 200))
    sha = await address(pool, image_id)
    await ask_lazily(pool, image_id, "large")
    claimed = await PostgresRenderRequests(pool).claim(stale_after_seconds=300)
    assert claimed is not None
    assert await render_variant(pool, store, runner)(claimed) is RenderOutcome.RENDERED
    rows = await variant_rows(pool, sha)
    lost = [f"variants/{sha}/v2/small.webp", f"variants/{sha}/v2/large.jpg"]
    for key in lost:
        await store.delete(key)

    reconciler = Reconciler(
        store,
        PostgresContentInventory(pool),
        store,
        runner,
        grace_seconds=3600,
        limits=Limits(),
        spec=SPEC,
        max_original_bytes=10 * 1024**2,
        clock=lambda: LATER,
    )
    report = await reconciler.run()
    assert sorted(report.variants_rebuilt) == sorted(lost)
    assert await variant_rows(pool, sha) == rows, "every variant is still served"
    with Image.open(io.BytesIO(await store.get(lost[0], max_bytes=10**6) or b"")) as small_img:
        assert max(small_img.size) == 64, "rendered with version 2's preset"
    with Image.open(io.BytesIO(await store.get(lost[1], max_bytes=10**6) or b"")) as large_img:
        assert large_img.size == (200, 133)
    assert (await reconciler.run()).variants_rebuilt == [], "nothing is missing any more"
