"""The deletion feed against real Postgres, and delivery's target cache on top of it: a
deletion is reported whatever order transactions commit in, and the cache never answers for
an image deleted before the lookup began."""

from __future__ import annotations

import asyncpg
import pytest

from imagery.common.db.deletions import PostgresDeletionFeed
from imagery.common.db.images import PostgresImageRepository
from imagery.common.errors import DependencyUnavailable
from imagery.delivery.adapters.target_cache import ReadyTargetCache
from imagery.devstack.aws import AwsResources
from imagery.devstack.fixtures import seed_ready_images

pytestmark = pytest.mark.integration


async def test_a_delete_is_reported_once_committed_even_if_it_began_before_the_horizon(
    pool: asyncpg.Pool, database_url: str, aws: AwsResources
) -> None:
    repo, feed = PostgresImageRepository(pool), PostgresDeletionFeed(pool)
    early, late = await seed_ready_images(database_url, aws, 2, put_objects=False)
    start = await feed.deletion_horizon()

    slow = await asyncpg.connect(database_url)
    try:
        transaction = slow.transaction()
        await transaction.start()  # a DeleteImage that began first and commits last
        await slow.execute("DELETE FROM image_records WHERE id = $1", early)
        await slow.execute("INSERT INTO image_deletions (image_id) VALUES ($1)", early)

        assert await repo.delete(late) is not None  # begins later, commits first
        horizon, seen = await feed.deletions_since(start)
        assert seen == [late], "uncommitted deletions are invisible"

        await transaction.commit()
    finally:
        await slow.close()

    _, seen_next = await feed.deletions_since(horizon)
    assert early in seen_next, "the horizon stayed behind the transaction still running"
    await feed.close()


async def test_pruning_forgets_old_deletions_only(
    pool: asyncpg.Pool, database_url: str, aws: AwsResources
) -> None:
    repo, feed = PostgresImageRepository(pool), PostgresDeletionFeed(pool)
    (image_id,) = await seed_ready_images(database_url, aws, 1, put_objects=False)
    start = await feed.deletion_horizon()
    await repo.delete(image_id)

    assert await feed.prune(3600) == 0
    assert (await feed.deletions_since(start))[1] == [image_id]
    assert await feed.prune(0) == 1
    assert (await feed.deletions_since(start))[1] == []
    await feed.close()


async def test_the_cache_over_postgres_forgets_a_deleted_image_before_answering(
    pool: asyncpg.Pool, database_url: str, aws: AwsResources
) -> None:
    repo, feed = PostgresImageRepository(pool), PostgresDeletionFeed(pool)
    kept, doomed = await seed_ready_images(database_url, aws, 2, put_objects=False)
    cache = ReadyTargetCache(repo, feed, size=100)
    await cache.start()
    warm = await cache.find_download_targets([kept, doomed], "small", ["webp"])
    assert {t.image_id for t in warm} == {kept, doomed} and len(cache) == 2

    deleted = await PostgresImageRepository(pool).delete(doomed)  # as UploadService does
    assert deleted is not None
    after = await cache.find_download_targets([kept, doomed], "small", ["webp"])

    assert [t.image_id for t in after] == [kept]
    assert len(cache) == 1
    await feed.close()


async def test_a_feed_whose_connection_dies_fails_one_read_then_recovers(
    pool: asyncpg.Pool, database_url: str, postgres_server: object
) -> None:
    feed = PostgresDeletionFeed(pool)
    start = await feed.deletion_horizon()
    await feed.deletions_since(start)  # it keeps a connection now
    admin = await asyncpg.connect(postgres_server.admin_dsn)  # type: ignore[attr-defined]
    try:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()",
            database_url.rsplit("/", 1)[1],
        )
    finally:
        await admin.close()

    with pytest.raises(DependencyUnavailable):  # answered as UNAVAILABLE, so callers retry
        await feed.deletions_since(start)
    horizon, seen = await feed.deletions_since(start)  # on a fresh connection
    assert seen == [] and horizon >= start
    await feed.close()
