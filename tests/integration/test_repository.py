"""The ImageRepository contract, held against the real Postgres adapter and the unit-test fake."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from imagery.common.db.images import PostgresImageRepository
from imagery.common.domain import ImageRecord, ImageStatus
from imagery.common.errors import ImageAlreadyExists
from imagery.common.ids import new_image_id
from imagery.common.storage_keys import GLOBAL_SCOPE, upload_key
from imagery.common.tenancy import DEFAULT_PROJECT
from imagery.upload.ports import ImageRepository
from tests.fakes import InMemoryImageRepository

pytestmark = pytest.mark.integration


@pytest.fixture(params=["postgres", "fake"])
def repo(request: pytest.FixtureRequest) -> ImageRepository:
    if request.param == "fake":
        return InMemoryImageRepository()
    pool: asyncpg.Pool = request.getfixturevalue("pool")
    return PostgresImageRepository(pool)


def _pending(**changes: object) -> ImageRecord:
    image_id = new_image_id()
    fields: dict[str, object] = {
        "id": image_id,
        "status": ImageStatus.PENDING,
        "content_type": "image/png",
        "file_name": "cat.png",
        "object_key": upload_key(GLOBAL_SCOPE, image_id),
    }
    fields.update(changes)
    return ImageRecord(**fields)  # type: ignore[arg-type]


async def test_saved_record_reads_back(repo: ImageRepository) -> None:
    record = _pending(file_name="Ferienfoto 🐱.png")
    await repo.save(principal="key:test", record=record)
    found = await repo.find_by_id(DEFAULT_PROJECT, record.id)
    assert found is not None
    assert (found.id, found.status, found.file_name, found.size_bytes) == (
        record.id,
        ImageStatus.PENDING,
        "Ferienfoto 🐱.png",
        None,
    )
    assert found.object_key == f"uploads/{record.id}"
    assert found.created_at is not None and found.updated_at is not None
    assert found.variants == ()


async def test_unknown_id_is_none(repo: ImageRepository) -> None:
    assert await repo.find_by_id(DEFAULT_PROJECT, new_image_id()) is None


async def test_saving_an_existing_id_is_refused(repo: ImageRepository) -> None:
    record = _pending()
    await repo.save(principal="key:test", record=record)
    with pytest.raises(ImageAlreadyExists):
        await repo.save(principal="key:test", record=record)


async def test_update_status_writes_size_and_moves_updated_at(repo: ImageRepository) -> None:
    record = _pending()
    await repo.save(principal="key:test", record=record)
    before = await repo.find_by_id(DEFAULT_PROJECT, record.id)
    await asyncio.sleep(0.01)
    assert await repo.update_status(record.id, ImageStatus.READY, size_bytes=2048)
    after = await repo.find_by_id(DEFAULT_PROJECT, record.id)
    assert before is not None and after is not None
    assert (after.status, after.size_bytes) == (ImageStatus.READY, 2048)
    assert after.updated_at is not None and before.updated_at is not None
    assert after.updated_at > before.updated_at


async def test_update_status_can_be_conditional(repo: ImageRepository) -> None:
    record = _pending()
    await repo.save(principal="key:test", record=record)
    assert not await repo.update_status(
        record.id, ImageStatus.READY, only_from={ImageStatus.PROCESSING}
    )
    assert await repo.update_status(
        record.id, ImageStatus.FAILED, failure_reason="CORRUPT", only_from={ImageStatus.PENDING}
    )
    failed = await repo.find_by_id(DEFAULT_PROJECT, record.id)
    assert failed is not None
    assert (failed.status, failed.failure_reason) == (ImageStatus.FAILED, "CORRUPT")
    assert not await repo.update_status(new_image_id(), ImageStatus.READY)


async def test_only_one_claimant_wins_and_terminal_records_are_never_claimed(
    repo: ImageRepository,
) -> None:
    record = _pending()
    await repo.save(principal="key:test", record=record)
    claims = await asyncio.gather(
        *(repo.claim_for_processing(record.id, stale_after_seconds=600) for _ in range(5))
    )
    winners = [c for c in claims if c is not None]
    assert len(winners) == 1 and winners[0].status is ImageStatus.PROCESSING
    await repo.update_status(record.id, ImageStatus.READY, size_bytes=1)
    assert await repo.claim_for_processing(record.id, stale_after_seconds=0) is None


async def test_a_stale_processing_claim_can_be_taken_over(repo: ImageRepository) -> None:
    record = _pending()
    await repo.save(principal="key:test", record=record)
    assert await repo.claim_for_processing(record.id, stale_after_seconds=600) is not None
    assert await repo.claim_for_processing(record.id, stale_after_seconds=600) is None
    if isinstance(repo, InMemoryImageRepository):
        repo.clock.advance(1)
    else:
        await asyncio.sleep(0.05)
    assert await repo.claim_for_processing(record.id, stale_after_seconds=0.01) is not None


async def test_ready_records_carry_their_blobs_variants(
    pool: asyncpg.Pool, database_url: str, aws: object
) -> None:
    from imagery.devstack.fixtures import seed_ready_images

    (image_id,) = await seed_ready_images(database_url, aws, 1, put_objects=False)  # type: ignore[arg-type]
    repo = PostgresImageRepository(pool)
    record = await repo.find_by_id(DEFAULT_PROJECT, image_id)
    assert record is not None and record.status is ImageStatus.READY
    assert record.sha256 is not None
    names = {(v.name, v.format) for v in record.variants}
    assert ("thumbnail", "webp") in names and ("original", "jpeg") in names
    assert all(v.key.startswith(f"variants/{record.sha256}/") for v in record.variants)
    (webp,) = await repo.find_download_targets(DEFAULT_PROJECT, [image_id], "small", ["webp"])
    assert (webp.status, webp.key) == (ImageStatus.READY, f"variants/{record.sha256}/small.webp")
    assert webp.content_type == "image/webp"
    (fallback,) = await repo.find_download_targets(
        DEFAULT_PROJECT, [image_id, new_image_id()], "small", ["jpeg", "png"]
    )
    assert fallback.key == f"variants/{record.sha256}/small.jpg"
    (none,) = await repo.find_download_targets(DEFAULT_PROJECT, [image_id], "small", ["avif"])
    assert (none.status, none.key, none.content_type) == (ImageStatus.READY, None, None)


async def test_claim_unfinished_takes_idle_pending_and_processing_records_once(
    repo: ImageRepository,
) -> None:
    waiting, working, done = _pending(), _pending(), _pending()
    for record in (waiting, working, done):
        await repo.save(principal="key:test", record=record)
    await repo.claim_for_processing(working.id, stale_after_seconds=600)
    await repo.update_status(done.id, ImageStatus.READY, size_bytes=1)
    assert {
        r.id for r in await repo.claim_unfinished(idle_seconds=3600, lease_seconds=0.01)
    } == set()
    if isinstance(repo, InMemoryImageRepository):
        repo.clock.advance(1)
    else:
        await asyncio.sleep(0.05)
    first = await repo.claim_unfinished(idle_seconds=0.01, lease_seconds=0.01, limit=1)
    second = await repo.claim_unfinished(idle_seconds=0.01, lease_seconds=0.01)
    assert len(first) == 1, "at most the limit"
    assert {r.id for r in [*first, *second]} == {waiting.id, working.id}, "each taken once"
    assert await repo.claim_unfinished(idle_seconds=0.01, lease_seconds=3600) == [], (
        "swept within the lease: not due again"
    )
    if isinstance(repo, InMemoryImageRepository):
        repo.clock.advance(1)
    else:
        await asyncio.sleep(0.05)
    assert len(await repo.claim_unfinished(idle_seconds=0.01, lease_seconds=0.01)) == 2, (
        "due again after the idle"
    )


async def test_concurrent_sweeps_never_take_the_same_record(repo: ImageRepository) -> None:
    records = [_pending() for _ in range(30)]
    for record in records:
        await repo.save(principal="key:test", record=record)
    if isinstance(repo, InMemoryImageRepository):
        repo.clock.advance(1)
    else:
        await asyncio.sleep(0.05)
    sweeps = await asyncio.gather(
        *(repo.claim_unfinished(idle_seconds=0.01, lease_seconds=60, limit=10) for _ in range(4))
    )
    taken = [r.id for sweep in sweeps for r in sweep]
    assert len(taken) == len(set(taken)) == 30
