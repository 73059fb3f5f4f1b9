"""Composition root: the only place DeliveryService builds infrastructure."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack

from imagery.common.cdn import CloudFrontUrlBuilder
from imagery.common.db.deletions import PostgresDeletionFeed
from imagery.common.db.images import PostgresImageRepository
from imagery.common.db.pool import create_pool
from imagery.common.grpc.server import GrpcServer
from imagery.delivery.adapters.cloudfront import CachedCloudFrontSigner
from imagery.delivery.adapters.target_cache import ReadyTargetCache
from imagery.delivery.config import DeliverySettings
from imagery.delivery.grpc_api.servicer import DeliveryServiceServicer
from imagery.delivery.ports import ImageReader
from imagery.delivery.use_cases import BatchGetDownloadUrls, GetDownloadUrl, GetImage


def build_signer(
    settings: DeliverySettings, executor: ThreadPoolExecutor | None
) -> CachedCloudFrontSigner:
    builder = CloudFrontUrlBuilder(
        settings.cloudfront_base_url,
        settings.key_pair_id,
        settings.private_key,
        settings.hash_algorithm,
    )
    return CachedCloudFrontSigner(
        builder,
        expiry_seconds=settings.expiry_seconds,
        bucket_seconds=settings.expiry_bucket_seconds,
        cache_size=settings.url_cache_size,
        executor=executor,
        threads=settings.signing_threads,
    )


async def build_server(settings: DeliverySettings, stack: AsyncExitStack) -> GrpcServer:
    pool = await create_pool(settings.base.database_url)
    stack.push_async_callback(pool.close)
    executor = stack.enter_context(
        ThreadPoolExecutor(settings.signing_threads, thread_name_prefix="cloudfront-sign")
    )
    repository = PostgresImageRepository(pool)
    images: ImageReader = repository
    if settings.target_cache_size > 0:
        feed = PostgresDeletionFeed(pool)
        stack.push_async_callback(feed.close)  # runs before pool.close, which waits for it
        cache = ReadyTargetCache(repository, feed, size=settings.target_cache_size)
        await cache.start()
        images = cache
    signer = build_signer(settings, executor)
    servicer = DeliveryServiceServicer(
        GetImage(images),
        GetDownloadUrl(images, signer, settings.presets),
        BatchGetDownloadUrls(images, signer, settings.presets),
    )
    return GrpcServer([servicer.registration()])
