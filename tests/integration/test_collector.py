"""Unreferenced content really leaves S3 and Postgres, and failures are retried, not forgotten."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import asyncpg
import pytest

from imagery.common.aws.clients import s3_client
from imagery.common.aws.s3 import S3ObjectStore
from imagery.common.collector import BlobCollector, original_key
from imagery.common.config import AwsSettings
from imagery.common.db.images import PostgresImageRepository
from imagery.common.db.outcomes import PostgresOutcomeRepository, VerifiedImage
from imagery.common.domain import ImageRecord, ImageStatus, VariantInfo
from imagery.common.errors import Unavailable
from imagery.common.ids import new_image_id, upload_key

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
        raise Unavailable("S3 DeleteObject failed (SlowDown): retry shortly.")


async def _ready_image(pool: asyncpg.Pool, store: S3ObjectStore) -> str:
    repo, outcomes = PostgresImageRepository(pool), PostgresOutcomeRepository(pool)
    image_id = new_image_id()
    await repo.save(
        ImageRecord(image_id, ImageStatus.PENDING, "image/webp", "a.webp", upload_key(image_id))
    )
    await repo.claim_for_processing(image_id, stale_after_seconds=300)

    async def write() -> None:
        for key in [original_key(SHA), *(v.key for v in VARIANTS)]:
            await store.put(key, b"abc", content_type="image/webp")

    await outcomes.mark_ready(image_id, VerifiedImage(SHA, "webp", 10, 10, 3), VARIANTS, write)
    return image_id


async def _keys(store: S3ObjectStore) -> list[str]:
    return [
        k
        for k in [original_key(SHA), *(v.key for v in VARIANTS)]
        if await store.head(k) is not None
    ]


async def test_the_last_reference_takes_the_objects_and_the_row(
    pool: asyncpg.Pool, store: S3ObjectStore
) -> None:
    first, second = await _ready_image(pool, store), await _ready_image(pool, store)
    repo, collector = PostgresImageRepository(pool), BlobCollector(pool, store)
    deleted = await repo.delete(first)
    assert deleted is not None and not deleted.unreferenced
    assert not await collector.collect(SHA), "still referenced"
    assert len(await _keys(store)) == 3
    deleted = await repo.delete(second)
    assert deleted is not None and deleted.unreferenced
    assert await collector.collect(SHA)
    assert await _keys(store) == []
    assert await pool.fetchval("SELECT count(*) FROM image_blobs") == 0
    assert await pool.fetchval("SELECT count(*) FROM image_variants") == 0


async def test_a_failed_deletion_is_kept_for_the_sweep(
    pool: asyncpg.Pool, store: S3ObjectStore
) -> None:
    image_id = await _ready_image(pool, store)
    await PostgresImageRepository(pool).delete(image_id)
    with pytest.raises(Unavailable):
        await BlobCollector(pool, BrokenDeletes()).collect(SHA)
    assert (
        await pool.fetchval("SELECT reference_count FROM image_blobs WHERE sha256 = $1", SHA) == 0
    )
    assert await BlobCollector(pool, BrokenDeletes()).sweep() == 0
    assert await BlobCollector(pool, store).sweep() == 1
    assert await _keys(store) == []
    assert await pool.fetchval("SELECT count(*) FROM image_blobs") == 0
