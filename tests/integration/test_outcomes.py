"""The processor's writes against real Postgres: one transaction, guarded, convergent."""

from __future__ import annotations

import asyncio
import hashlib

import asyncpg
import pytest

from imagery.common.db.images import PostgresImageRepository
from imagery.common.db.outcomes import NotProcessing, PostgresOutcomeRepository, VerifiedImage
from imagery.common.domain import ImageRecord, ImageStatus, VariantInfo
from imagery.common.ids import new_image_id, upload_key

pytestmark = pytest.mark.integration
SHA = hashlib.sha256(b"same bytes").hexdigest()
IMAGE = VerifiedImage(SHA, "jpeg", 640, 480, 12345)


async def _claimed(repo: PostgresImageRepository) -> str:
    image_id = new_image_id()
    await repo.save(
        ImageRecord(image_id, ImageStatus.PENDING, "image/jpeg", "a.jpg", upload_key(image_id))
    )
    assert await repo.claim_for_processing(image_id, stale_after_seconds=300) is not None
    return image_id


async def test_concurrent_identical_uploads_converge_on_one_blob(pool: asyncpg.Pool) -> None:
    repo, outcomes = PostgresImageRepository(pool), PostgresOutcomeRepository(pool)
    ids = [await _claimed(repo) for _ in range(20)]
    new = await asyncio.gather(*(outcomes.mark_ready(i, IMAGE) for i in ids))
    assert sum(new) == 1, "exactly one worker inserted the blob"
    assert (
        await pool.fetchval("SELECT reference_count FROM image_blobs WHERE sha256 = $1", SHA) == 20
    )
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM image_records WHERE sha256 = $1 AND status = 'ready'", SHA
        )
        == 20
    )
    linked_id = await _claimed(repo)
    linked = await outcomes.link_existing(linked_id, SHA, "jpeg")
    assert linked.linked and linked.image == IMAGE
    assert (
        await pool.fetchval("SELECT reference_count FROM image_blobs WHERE sha256 = $1", SHA) == 21
    )


async def test_variants_are_stored_with_a_new_blob(pool: asyncpg.Pool) -> None:
    repo, outcomes = PostgresImageRepository(pool), PostgresOutcomeRepository(pool)
    image_id = await _claimed(repo)
    variants = [
        VariantInfo("small", "webp", "image/webp", 400, 300, 999, f"variants/{SHA}/small.webp")
    ]
    await outcomes.mark_ready(image_id, IMAGE, variants)
    record = await repo.find_by_id(image_id)
    assert record is not None and record.variants == tuple(variants)


async def test_outcomes_are_written_only_while_processing(pool: asyncpg.Pool) -> None:
    repo, outcomes = PostgresImageRepository(pool), PostgresOutcomeRepository(pool)
    image_id = await _claimed(repo)
    assert await outcomes.mark_failed(image_id, "CORRUPT", size_bytes=10)
    assert not await outcomes.mark_failed(image_id, "EMPTY")
    with pytest.raises(NotProcessing):
        await outcomes.mark_ready(image_id, IMAGE)
    assert await pool.fetchval("SELECT count(*) FROM image_blobs") == 0, (
        "the rolled-back ready left no blob"
    )
    record = await repo.find_by_id(image_id)
    assert record is not None
    assert (record.status, record.failure_reason, record.size_bytes) == (
        ImageStatus.FAILED,
        "CORRUPT",
        10,
    )


async def test_a_released_claim_can_be_claimed_again(pool: asyncpg.Pool) -> None:
    repo, outcomes = PostgresImageRepository(pool), PostgresOutcomeRepository(pool)
    image_id = await _claimed(repo)
    await outcomes.release_claim(image_id)
    assert (await repo.find_by_id(image_id)).status is ImageStatus.PENDING  # type: ignore[union-attr]
    assert await repo.claim_for_processing(image_id, stale_after_seconds=300) is not None


async def test_objects_are_written_once_for_concurrent_identical_uploads(
    pool: asyncpg.Pool,
) -> None:
    repo, outcomes = PostgresImageRepository(pool), PostgresOutcomeRepository(pool)
    ids = [await _claimed(repo) for _ in range(10)]
    writes = 0

    async def write_objects() -> None:
        nonlocal writes
        writes += 1
        await asyncio.sleep(0.05)  # S3 puts, while the blob row is held

    fresh = await asyncio.gather(*(outcomes.mark_ready(i, IMAGE, (), write_objects) for i in ids))
    assert writes == 1 and fresh.count(True) == 1


async def test_known_content_of_another_format_is_a_mismatch_and_changes_nothing(
    pool: asyncpg.Pool,
) -> None:
    repo, outcomes = PostgresImageRepository(pool), PostgresOutcomeRepository(pool)
    await outcomes.mark_ready(await _claimed(repo), IMAGE)
    liar = await _claimed(repo)
    result = await outcomes.link_existing(liar, SHA, "png")
    assert (result.linked, result.mismatch) == (False, "jpeg")
    assert (
        await pool.fetchval("SELECT reference_count FROM image_blobs WHERE sha256 = $1", SHA) == 1
    )
    unknown = await outcomes.link_existing(liar, "f" * 64, "png")
    assert (unknown.linked, unknown.mismatch) == (False, None)


async def test_content_coming_back_from_zero_is_written_again(pool: asyncpg.Pool) -> None:
    repo, outcomes = PostgresImageRepository(pool), PostgresOutcomeRepository(pool)
    first = await _claimed(repo)
    await outcomes.mark_ready(first, IMAGE)
    deleted = await repo.delete(first)
    assert deleted is not None and deleted.unreferenced
    assert (await outcomes.link_existing(await _claimed(repo), SHA, "jpeg")).linked is False, (
        "no live blob"
    )
    again = await _claimed(repo)
    assert await outcomes.mark_ready(again, IMAGE, (), None) is True, (
        "objects must be written again"
    )
