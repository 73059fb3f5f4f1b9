"""Composition root: the only place the processor builds infrastructure."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from contextlib import AsyncExitStack
from dataclasses import dataclass

from opentelemetry import metrics
from opentelemetry.metrics import Observation

from imagery.common.aws.clients import s3_client, sqs_client
from imagery.common.aws.s3 import S3ObjectStore
from imagery.common.aws.sqs import SqsMessageQueue
from imagery.common.collector import BlobCollector
from imagery.common.db.deletions import DELETION_FEED_RETENTION_SECONDS, PostgresDeletionFeed
from imagery.common.db.images import PostgresImageRepository
from imagery.common.db.outcomes import PostgresOutcomeRepository
from imagery.common.db.pool import create_pool
from imagery.common.errors import ImageryError
from imagery.common.grpc.server import GrpcServer
from imagery.processor.config import ProcessorSettings
from imagery.processor.consumer.loop import Consumer
from imagery.processor.isolation import IsolatedRunner
from imagery.processor.process import UploadProcessor
from imagery.processor.reaper import Reaper

log = logging.getLogger(__name__)


@dataclass
class ProcessorApp:
    consumer: Consumer
    health: GrpcServer
    settings: ProcessorSettings
    collector: BlobCollector
    reaper: Reaper
    dlq: SqsMessageQueue
    deletions: PostgresDeletionFeed
    dlq_depth: int = 0

    def __post_init__(self) -> None:
        metrics.get_meter(__name__).create_observable_gauge(
            "imagery.processor.dlq.depth",
            callbacks=[lambda _: [Observation(self.dlq_depth)]],
            description="Messages waiting in the dead-letter queue (refreshed every 30 s)",
        )

    async def start(self, port: int, host: str = "[::]") -> int:
        """The health endpoint for Kubernetes probes (PROCESSOR_HEALTH_PORT)."""
        return await self.health.start(port, host)

    async def serve_until_signal(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        log.info(
            "processor consuming",
            extra={
                "queue": self.settings.queue_url,
                "concurrency": self.settings.concurrency,
                "job_slots": self.settings.job_slots,
            },
        )
        sweeper = asyncio.create_task(self._housekeeping(stop))
        watcher = asyncio.create_task(self._watch_dlq(stop))
        try:
            await self.consumer.run(stop, grace_seconds=self.settings.shutdown_grace_seconds)
        finally:
            sweeper.cancel()
            watcher.cancel()
            await self.health.stop()
        log.info("processor stopped")

    async def _watch_dlq(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                self.dlq_depth = await self.dlq.approximate_depth()
            except ImageryError as exc:
                log.warning("cannot read the dead-letter queue depth", extra={"error": str(exc)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 30)

    async def _housekeeping(self, stop: asyncio.Event) -> None:
        """Retry content deletions that failed or were interrupted (DeleteImage does the
        common case right after its commit), finish uploads the queue did not, and trim the
        deletion feed delivery's caches read."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.gc_interval_seconds)
            if stop.is_set():
                return
            for name, sweep in (
                ("unreferenced content", self.collector.sweep),
                ("unfinished uploads", self.reaper.sweep),
                ("deletion feed", self._prune_deletion_feed),
            ):
                try:
                    await sweep()
                except Exception as exc:  # noqa: BLE001 - a failed sweep is retried next interval
                    log.warning(f"sweep of {name} failed", extra={"error": str(exc)})

    async def _prune_deletion_feed(self) -> None:
        await self.deletions.prune(DELETION_FEED_RETENTION_SECONDS)


async def build_processor(settings: ProcessorSettings, stack: AsyncExitStack) -> ProcessorApp:
    runner = IsolatedRunner(settings.job_slots, settings.job_limits)
    stack.callback(runner.close)
    await asyncio.get_running_loop().run_in_executor(None, runner.warm_up)
    pool = await create_pool(settings.base.database_url, max_size=max(4, settings.concurrency * 2))
    stack.push_async_callback(pool.close)
    s3 = await stack.enter_async_context(s3_client(settings.base.aws))
    sqs = await stack.enter_async_context(sqs_client(settings.base.aws))
    queue = SqsMessageQueue(sqs, settings.queue_url)
    store = S3ObjectStore(s3, settings.base.aws.bucket)
    images = PostgresImageRepository(pool)
    process = UploadProcessor(
        images,
        PostgresOutcomeRepository(pool),
        store,
        runner,
        limits=settings.limits,
        max_upload_bytes=settings.base.max_upload_bytes,
        claim_stale_seconds=settings.claim_stale_seconds,
        spec=settings.render,
    )
    consumer = Consumer(
        queue,
        process,
        bucket=settings.base.aws.bucket,
        concurrency=settings.concurrency,
        visibility_timeout=await queue.visibility_timeout(),
        retry_base_seconds=settings.retry_base_seconds,
    )
    return ProcessorApp(
        consumer,
        GrpcServer([], grace_seconds=1),
        settings,
        BlobCollector(pool, store),
        Reaper(
            images,
            store,
            process,
            abandoned_after_seconds=settings.abandoned_after_seconds,
            claim_stale_seconds=settings.claim_stale_seconds,
        ),
        SqsMessageQueue(sqs, settings.dlq_url),
        PostgresDeletionFeed(pool),
    )
