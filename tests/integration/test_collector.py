"""Unreferenced content really leaves S3 and Postgres after its grace period, and failures are
retried, not forgotten."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import asyncpg
import pytest

from imagery.common.aws.clients import s3_client
from imagery.common.config import AwsSettings
from imagery.common.db.images import PostgresImageRepository
from imagery.common.domain import ImageRecord, ImageStatus, VariantInfo
from imagery.common.errors import DependencyUnavailable
from imagery.common.ids import new_image_id
from imagery.common.storage_keys import GLOBAL_SCOPE, original_key, upload_key
from imagery.common.tenancy import DEFAULT_PROJECT
from imagery.processor.adapters.postgres import PostgresContentStore, PostgresOutcomes
from imagery.processor.adapters.s3 import S3ObjectStore
from imagery.processor.ports import VerifiedImage
from imagery.processor.use_cases.collect_content import ContentCollector

pytestmark = pytest.mark.integration
SHA = hashlib.sha256(b"collect me").hexdigest()
VARIANTS = [
    VariantInfo(n, "webp", "image/webp", 10, 10, 3, f"variants/{SHA}/{n}.webp")
    for n in ("small", "large")
]


@pytest.fixture
async def store(aws_settings: AwsSettings) -> AsyncIterator[S3ObjectStore]:
    async with s3_client(aws_settings) as client:
        yield S3ObjectStore(client, aws_settings.bucket)


class BrokenDeletes:
    async def delete(self, key: str) -> None:
        raise DependencyUnavailable("S3 DeleteObject failed (SlowDown): retry shortly.")


async def _ready_image(pool: asyncpg.Pool, store: S3ObjectStore) -> str:
    """An image READY the way the processor makes one: reserve, write, reference."""
    repo, outcomes = PostgresImageRepository(pool), PostgresOutcomes(pool)
    image_id = new_image_id()
    await repo.save(
        principal="key:test",
        record=ImageRecord(
            image_id,
            ImageStatus.PENDING,
            "image/webp",
            "a.webp",
            upload_key(GLOBAL_SCOPE, image_id),
        ),
    )
    await repo.claim_for_processing(image_id, stale_after_seconds=300)
    image = VerifiedImage(SHA, "webp", 10, 10, 3)
    async with outcomes.unit_of_work() as uow:
        reservation = await uow.reserve_content(image, VARIANTS)
    assert reservation is not None
    for key in [original_key(GLOBAL_SCOPE, SHA), *(v.key for v in VARIANTS)]:
        await store.put(key, b"abc", content_type="image/webp")
    async with outcomes.unit_of_work() as uow:
        assert await uow.lock_processing(image_id)
        assert await uow.reference_content(SHA, reservation)
        await uow.mark_ready(image_id, image)
    return image_id


async def _keys(store: S3ObjectStore) -> list[str]:
    return [
        k
        for k in [original_key(GLOBAL_SCOPE, SHA), *(v.key for v in VARIANTS)]
        if await store.head(k) is not None
    ]


def _collector(pool: asyncpg.Pool, objects: object, grace: float = 0) -> ContentCollector:
    return ContentCollector(
        PostgresContentStore(pool),
        objects,  # type: ignore[arg-type]
        grace_seconds=grace,
    )


async def test_the_last_reference_takes_the_objects_and_the_row_after_the_grace(
    pool: asyncpg.Pool, store: S3ObjectStore
) -> None:
    first, second = await _ready_image(pool, store), await _ready_image(pool, store)
    repo = PostgresImageRepository(pool)
    deleted = await repo.delete(DEFAULT_PROJECT, first, principal="key:test")
    assert deleted is not None
    assert await _collector(pool, store).sweep() == 0, "still referenced"
    assert len(await _keys(store)) == 3
    deleted = await repo.delete(DEFAULT_PROJECT, second, principal="key:test")
    assert deleted is not None
    assert await _collector(pool, store, grace=3600).sweep() == 0, "within the grace period"
    assert len(await _keys(store)) == 3
    assert await _collector(pool, store).sweep() == 1
    assert await _keys(store) == []
    assert await pool.fetchval("SELECT count(*) FROM image_blobs") == 0
    assert await pool.fetchval("SELECT count(*) FROM image_variants") == 0


async def test_a_failed_deletion_is_kept_for_a_later_sweep(
    pool: asyncpg.Pool, store: S3ObjectStore
) -> None:
    image_id = await _ready_image(pool, store)
    await PostgresImageRepository(pool).delete(DEFAULT_PROJECT, image_id, principal="key:test")
    assert await _collector(pool, BrokenDeletes()).sweep() == 0
    assert await pool.fetchval(
        "SELECT collecting_since IS NOT NULL FROM image_blobs WHERE sha256 = $1", SHA
    ), "still claimed: nothing may revive half-deleted content"
    assert await _collector(pool, store).sweep() == 0, "the claim is still alive"
    await pool.execute(  # the failed collector's claim outlives its lifetime
        "UPDATE image_blobs SET collecting_since = collecting_since - interval '1 hour'"
    )
    assert await _collector(pool, store).sweep() == 1, "taken over"
    assert await _keys(store) == []
    assert await pool.fetchval("SELECT count(*) FROM image_blobs") == 0


async def test_no_transaction_is_open_while_objects_are_deleted(
    pool: asyncpg.Pool, store: S3ObjectStore
) -> None:
    image_id = await _ready_image(pool, store)
    await PostgresImageRepository(pool).delete(DEFAULT_PROJECT, image_id, principal="key:test")
    seen: list[int] = []

    class Watching:
        async def delete(self, key: str) -> None:
            seen.append(
                await pool.fetchval(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND state LIKE 'idle in transaction%'"
                )
            )
            await store.delete(key)

    assert await _collector(pool, Watching()).sweep() == 1
    assert seen and set(seen) == {0}
