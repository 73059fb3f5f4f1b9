"""DeliveryService plus the echo RPC, for `bench.delivery` (run as its own process): the
production build, or with `UNAUTHENTICATED_AS_KEY` set the same wiring without the
credential check (`bench.unauthenticated`)."""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack

from bench.echo import add_echo
from bench.unauthenticated import UNAUTHENTICATED_AS_KEY, principal_of, running_as
from imagery.common.access import open_access
from imagery.common.db.images import PostgresImageRepository
from imagery.common.db.pool import create_pool
from imagery.common.grpc.server import GrpcServer
from imagery.common.logs import configure_logging
from imagery.delivery.adapters.target_cache import ReadyTargetCache
from imagery.delivery.bootstrap import build_server, build_signer
from imagery.delivery.config import DeliverySettings, load_settings
from imagery.delivery.grpc_api.servicer import DeliveryServiceServicer
from imagery.delivery.ports import ImageReader
from imagery.delivery.use_cases import (
    BatchGetDownloadUrls,
    GetDownloadUrl,
    GetImage,
    UrlLifetimes,
)
from imagery.v1 import delivery_service_pb2_grpc


async def build_unauthenticated(
    settings: DeliverySettings, stack: AsyncExitStack, key: str
) -> GrpcServer:
    """`imagery.delivery.bootstrap.build_server` line for line (keep them in step), except
    that the server gets no authenticator and every RPC runs as `key`'s principal."""
    pool = await create_pool(settings.base.database_url)
    stack.push_async_callback(pool.close)
    executor = stack.enter_context(
        ThreadPoolExecutor(settings.signing_threads, thread_name_prefix="cloudfront-sign")
    )
    authenticator, bus = await open_access(settings.base, pool, stack)
    principal = await principal_of(authenticator, key)
    repository = PostgresImageRepository(pool)
    images: ImageReader = repository
    if settings.target_cache_size > 0:
        cache = ReadyTargetCache(
            repository, size=settings.target_cache_size, caching=lambda: bus.connected
        )
        bus.subscribe(cache)
        images = cache
    signer = build_signer(settings, executor)
    lifetimes = UrlLifetimes(settings.base.project_policy)
    servicer = DeliveryServiceServicer(
        GetImage(images),
        GetDownloadUrl(images, signer, settings.presets, lifetimes),
        BatchGetDownloadUrls(images, signer, settings.presets, lifetimes),
    )
    return GrpcServer(
        [
            running_as(
                principal,
                servicer,
                delivery_service_pb2_grpc.add_DeliveryServiceServicer_to_server,
            )
        ],
        authenticator=None,
        reflection_enabled=settings.base.grpc_reflection,
        tls=settings.base,
    )


async def main() -> None:
    settings = load_settings()
    configure_logging("delivery", settings.base.log_level, settings.base.log_format)
    key = os.environ.get(UNAUTHENTICATED_AS_KEY)
    async with AsyncExitStack() as stack:
        if key:
            server = await build_unauthenticated(settings, stack, key)
        else:
            server = await build_server(settings, stack)
        add_echo(server)
        await server.start(settings.base.grpc_port, host="127.0.0.1")
        await server.serve_until_signal()


if __name__ == "__main__":
    asyncio.run(main())
