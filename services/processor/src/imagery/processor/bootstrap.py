"""Composition root: the only place the processor builds infrastructure."""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack
from dataclasses import dataclass

import asyncpg

from imagery.common.aws.clients import s3_client, sqs_client
from imagery.common.db.deletions import DELETION_FEED_RETENTION_SECONDS, PostgresDeletionFeed
from imagery.common.db.images import PostgresImageRepository
from imagery.common.db.pool import create_pool
from imagery.common.db.upload_requests import PostgresUploadRequests
from imagery.common.grpc.server import GrpcServer
from imagery.common.runner import stop_on_signals
from imagery.processor.adapters.admin_jobs import PostgresAdminJobs
from imagery.processor.adapters.backfills import PostgresBackfills
from imagery.processor.adapters.isolation import IsolatedRunner
from imagery.processor.adapters.postgres import (
    PostgresContentInventory,
    PostgresContentStore,
    PostgresOutcomes,
    PostgresUploadProjects,
)
from imagery.processor.adapters.probe import PostgresAndS3Probe
from imagery.processor.adapters.renders import PostgresRenderRequests
from imagery.processor.adapters.s3 import S3ObjectStore
from imagery.processor.adapters.sqs import SqsMessageQueue
from imagery.processor.config import ProcessorSettings
from imagery.processor.consumer import Consumer
from imagery.processor.fairness import FairShare
from imagery.processor.housekeeping import Every, Housekeeping
from imagery.processor.renderer import Renderer
from imagery.processor.use_cases.backfill import Backfill
from imagery.processor.use_cases.collect_content import ContentCollector
from imagery.processor.use_cases.finish_unfinished import Reaper
from imagery.processor.use_cases.process_upload import UploadProcessor
from imagery.processor.use_cases.reconcile import Reconciler
from imagery.processor.use_cases.redrive_dead_letters import RedriveDeadLetters
from imagery.processor.use_cases.render_variant import RenderVariant
from imagery.processor.use_cases.run_admin_jobs import RunAdminJobs

log = logging.getLogger(__name__)


@dataclass
class ProcessorApp:
    consumer: Consumer
    housekeeping: Housekeeping
    renderer: Renderer
    health: GrpcServer
    settings: ProcessorSettings

    async def start(self, port: int, host: str = "[::]") -> int:
        """The health endpoint for Kubernetes probes (PROCESSOR_HEALTH_PORT)."""
        return await self.health.start(port, host)

    async def serve_until_signal(self) -> None:
        stop = stop_on_signals()
        log.info(
            "processor consuming",
            extra={
                "queue": self.settings.queue_url,
                "concurrency": self.settings.concurrency,
                "job_slots": self.settings.job_slots,
                "project_max_in_flight": self.settings.project_max_in_flight,
                "render_concurrency": self.settings.render_concurrency,
            },
        )
        grace = self.settings.shutdown_grace_seconds
        housekeeping = asyncio.create_task(self.housekeeping.run(stop))
        renderer = asyncio.create_task(self.renderer.run(stop, grace_seconds=grace))
        try:
            await self.consumer.run(stop, grace_seconds=grace)
        finally:
            stop.set()  # the consumer may have ended by an error: the renderer ends with it
            await renderer
            housekeeping.cancel()
            await self.health.stop()
        log.info("processor stopped")


async def build_processor(settings: ProcessorSettings, stack: AsyncExitStack) -> ProcessorApp:
    runner = IsolatedRunner(settings.job_slots, settings.job_limits)
    stack.callback(runner.close)
    await asyncio.get_running_loop().run_in_executor(None, runner.warm_up)
    pool = await create_pool(
        settings.base.database_url, max_size=max(4, settings.concurrency * 2), acquire_timeout=None
    )
    stack.push_async_callback(pool.close)
    s3 = await stack.enter_async_context(s3_client(settings.base.aws))
    sqs = await stack.enter_async_context(sqs_client(settings.base.aws))
    queue = SqsMessageQueue(sqs, settings.queue_url)
    store = S3ObjectStore(s3, settings.base.aws.bucket)
    images = PostgresImageRepository(pool)
    probe = PostgresAndS3Probe(pool, s3, settings.base.aws.bucket)
    process = UploadProcessor(
        images,
        PostgresOutcomes(pool),
        store,
        runner,
        limits=settings.limits,
        max_upload_bytes=settings.base.max_upload_bytes,
        claim_stale_seconds=settings.claim_stale_seconds,
        max_attempts=settings.max_attempts,
        spec=settings.render,
        policy=settings.base.project_policy,
        retained_days=settings.retained_failed_days,
    )
    consumer = Consumer(
        queue,
        process,
        bucket=settings.base.aws.bucket,
        concurrency=settings.concurrency,
        visibility_timeout=await queue.visibility_timeout(),
        retry_base_seconds=settings.retry_base_seconds,
        probe=probe,
        fair_share=None
        if settings.project_max_in_flight is None
        else FairShare(
            PostgresUploadProjects(pool),
            max_in_flight=settings.project_max_in_flight,
            room=2 * settings.concurrency,
        ),
    )
    collector = ContentCollector(
        PostgresContentStore(pool), store, grace_seconds=settings.content_grace_seconds
    )
    reaper = Reaper(
        images,
        store,
        process,
        abandoned_after_seconds=settings.abandoned_after_seconds,
        claim_stale_seconds=settings.claim_stale_seconds,
        parallel=settings.job_slots,
        lease_seconds=settings.gc_interval_seconds,
    )
    deletions = PostgresDeletionFeed(pool)
    dead_letters = SqsMessageQueue(sqs, settings.dlq_url)

    async def prune_deletion_feed() -> int:
        return await deletions.prune(DELETION_FEED_RETENTION_SECONDS)

    reconciler = Reconciler(
        store,
        PostgresContentInventory(pool),
        store,
        runner,
        grace_seconds=settings.reconcile_grace_seconds,
        limits=settings.limits,
        spec=settings.render,
        max_original_bytes=settings.base.project_policy.ceilings.max_upload_bytes,
        retained_days=settings.retained_failed_days,
    )

    async def reconcile() -> object:
        return await reconciler.run(dry_run=settings.reconcile_dry_run)

    housekeeping = Housekeeping(
        [
            ("unreferenced content", collector.sweep),
            ("unfinished uploads", reaper.sweep),
            ("deletion feed", prune_deletion_feed),
            ("expired request ids", PostgresUploadRequests(pool).prune),
            ("dead letters", RedriveDeadLetters(dead_letters, queue, probe)),
            ("operator jobs", _admin_jobs(settings, pool, store)),
            (
                "bucket and database",
                Every(
                    settings.reconcile_interval_seconds,
                    reconcile,
                    at_start=settings.reconcile_at_start,
                ),
            ),
        ],
        dead_letters,
        interval_seconds=settings.gc_interval_seconds,
    )
    lane = runner.lane(settings.render_concurrency)
    stack.callback(lane.close)
    renderer = _renderer(settings, pool, store, lane)
    return ProcessorApp(consumer, housekeeping, renderer, GrpcServer([], grace_seconds=1), settings)


def _renderer(
    settings: ProcessorSettings, pool: asyncpg.Pool, store: S3ObjectStore, lane: IsolatedRunner
) -> Renderer:
    """Renders after ingest, in `lane`: job slots of their own beside the uploads'."""
    requests = PostgresRenderRequests(pool)
    render = RenderVariant(
        requests,
        store,
        lane,
        limits=settings.limits,
        spec=settings.render,
        max_original_bytes=settings.base.project_policy.ceilings.max_upload_bytes,
        max_attempts=settings.max_attempts,
        stale_after_seconds=settings.claim_stale_seconds,
        retry_base_seconds=settings.retry_base_seconds,
    )
    return Renderer(
        requests,
        render,
        concurrency=settings.render_concurrency,
        poll_seconds=settings.render_poll_seconds,
        stale_after_seconds=settings.claim_stale_seconds,
    )


def _admin_jobs(
    settings: ProcessorSettings, pool: asyncpg.Pool, store: S3ObjectStore
) -> RunAdminJobs:
    jobs = PostgresAdminJobs(pool)
    backfill = Backfill(
        PostgresBackfills(pool),
        jobs,
        settings.render.presets,
        per_minute=settings.backfill_per_minute,
    )
    return RunAdminJobs(jobs, store, backfill=backfill)
