"""Composition root: the only place DeliveryService builds infrastructure."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack

import asyncpg

from imagery.common.access import open_access
from imagery.common.cdn import CloudFrontUrlBuilder
from imagery.common.db.changes import ChangeBus
from imagery.common.db.image_states import PostgresImageStates
from imagery.common.db.images import PostgresImageRepository
from imagery.common.db.listing import PostgresImageListing
from imagery.common.db.pool import create_pool
from imagery.common.db.schema import wait_for_schema
from imagery.common.grpc.auth import Authenticates, Authenticator
from imagery.common.grpc.server import GrpcServer
from imagery.delivery.adapters.cloudfront import CachedCloudFrontSigner
from imagery.delivery.adapters.render_requests import PostgresRenderRequests
from imagery.delivery.adapters.target_cache import ReadyTargetCache
from imagery.delivery.config import DeliverySettings
from imagery.delivery.grpc_api.servicer import DeliveryServiceServicer, DeliveryUseCases
from imagery.delivery.ports import ImageReader
from imagery.delivery.urls import BatchGetDownloadUrls, GetDownloadUrl, UrlLifetimes
from imagery.delivery.use_cases import (
    BatchGetImages,
    GetImage,
    ListImages,
)
from imagery.delivery.watch import Watchers, WatchImage


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


async def build_server(
    settings: DeliverySettings,
    stack: AsyncExitStack,
    *,
    authenticates: Callable[[Authenticator], Awaitable[Authenticates]] | None = None,
) -> GrpcServer:
    pool = await create_pool(
        settings.base.database_url,
        acquire_timeout=settings.base.database_acquire_timeout_ms / 1000,
        name="delivery",
        probe=True,
    )
    stack.push_async_callback(pool.close)
    await wait_for_schema(pool, timeout_seconds=settings.base.schema_wait_seconds)
    executor = stack.enter_context(
        ThreadPoolExecutor(settings.signing_threads, thread_name_prefix="cloudfront-sign")
    )
    authenticator, bus = await open_access(settings.base, pool, stack)
    repository = PostgresImageRepository(pool)
    listing = PostgresImageListing(pool)
    images: ImageReader = repository
    if settings.target_cache_size > 0:
        cache = ReadyTargetCache(
            repository, size=settings.target_cache_size, caching=lambda: bus.connected
        )
        bus.subscribe(cache)
        images = cache
    signer = build_signer(settings, executor)
    renders = PostgresRenderRequests(pool)
    lifetimes = UrlLifetimes(settings.base.project_policy)
    watchers = open_watchers(settings, pool, bus, stack)
    servicer = DeliveryServiceServicer(
        DeliveryUseCases(
            get_image=GetImage(images),
            get_url=GetDownloadUrl(images, signer, settings.presets, lifetimes, renders),
            batch=BatchGetDownloadUrls(images, signer, settings.presets, lifetimes, renders),
            batch_get_images=BatchGetImages(images),
            list_images=ListImages(listing),
            watch=WatchImage(watchers),
        )
    )
    caller_check = authenticator if authenticates is None else await authenticates(authenticator)
    server = GrpcServer.for_service([servicer.registration()], settings.base, caller_check)
    server.on_stop(watchers.close)  # streams end at once on SIGTERM, not after the grace
    return server


def open_watchers(
    settings: DeliverySettings, pool: asyncpg.Pool, bus: ChangeBus, stack: AsyncExitStack
) -> Watchers:
    """WatchImage's hub: hears the change bus, reads Postgres, and closes with `stack`
    (before the bus and the pool)."""
    watchers = Watchers(
        PostgresImageStates(pool),
        listening=lambda: bus.connected,
        max_watchers=settings.max_watchers,
        max_watchers_per_project=settings.max_watchers_per_project,
    )
    bus.subscribe(watchers)
    watchers.start()
    stack.push_async_callback(watchers.close)
    return watchers
