"""Composition root: the only place the processor builds infrastructure."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass

import asyncpg
from grpc_health.v1 import health_pb2

from imagery.common.aws.clients import cloudfront_client, s3_client, sns_client, sqs_client
from imagery.common.db.images import PostgresImageRepository
from imagery.common.db.pool import create_pool
from imagery.common.db.schema import wait_for_schema
from imagery.common.db.upload_requests import PostgresUploadRequests
from imagery.common.grpc.server import GrpcServer
from imagery.common.runner import stop_on_signals
from imagery.processor.adapters.admin_jobs import PostgresAdminJobs
from imagery.processor.adapters.backfills import PostgresBackfills
from imagery.processor.adapters.cloudfront import CloudFrontInvalidator
from imagery.processor.adapters.isolation import IsolatedRunner
from imagery.processor.adapters.lease import PostgresLease
from imagery.processor.adapters.outbox import PostgresEventOutbox
from imagery.processor.adapters.postgres import (
    PostgresContentInventory,
    PostgresContentStore,
    PostgresOutcomes,
    PostgresUploadProjects,
)
from imagery.processor.adapters.probe import PostgresAndS3Probe
from imagery.processor.adapters.reconcile_jobs import PostgresReconcileJobs
from imagery.processor.adapters.renders import PostgresRenderRequests
from imagery.processor.adapters.retention import PostgresRetention
from imagery.processor.adapters.s3 import S3ObjectStore
from imagery.processor.adapters.sns import SnsEventPublisher
from imagery.processor.adapters.sqs import SqsMessageQueue
from imagery.processor.adapters.takedowns import PostgresTakedowns
from imagery.processor.config import ProcessorSettings
from imagery.processor.consumer import Consumer, ConsumerState
from imagery.processor.fairness import FairShare
from imagery.processor.housekeeping import Every, Housekeeping
from imagery.processor.ports import RetentionRule
from imagery.processor.renderer import Renderer
from imagery.processor.use_cases.backfill import Backfill
from imagery.processor.use_cases.collect_content import ContentCollector
from imagery.processor.use_cases.finish_unfinished import Reaper
from imagery.processor.use_cases.process_upload import UploadProcessor
from imagery.processor.use_cases.prune_retained import PruneRetained
from imagery.processor.use_cases.reconcile import Reconciler
from imagery.processor.use_cases.reconcile_job import ReconcileJob
from imagery.processor.use_cases.redrive_dead_letters import RedriveDeadLetters
from imagery.processor.use_cases.relay_events import EventRelay
from imagery.processor.use_cases.render_variant import RenderVariant
from imagery.processor.use_cases.run_admin_jobs import RunAdminJobs
from imagery.processor.use_cases.takedown import TakedownJob

log = logging.getLogger(__name__)


LIVENESS_SERVICE = "liveness"  # the kubelet's livenessProbe asks for it by name
WATCH_SECONDS = 1.0


@dataclass
class ProcessorApp:
    consumer: Consumer
    housekeeping: Housekeeping
    renderer: Renderer
    health: GrpcServer
    settings: ProcessorSettings
    lease: PostgresLease
    relay: EventRelay | None = None  # None: EVENTS_TOPIC_ARN unset

    async def start(self, port: int, host: str = "[::]") -> int:
        """The health endpoint for Kubernetes probes (PROCESSOR_HEALTH_PORT)."""
        return await self.health.start(port, host)

    async def watch_health(self, stop: asyncio.Event) -> None:
        """Health from the consumer's state, every second: `liveness` is NOT_SERVING only
        while the loop is stuck (the kubelet restarts the pod); the overall status, which
        readiness asks for, is SERVING only while it runs (not paused for an outage)."""
        serving = health_pb2.HealthCheckResponse.SERVING
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        last: ConsumerState | None = None
        while not stop.is_set():
            state = self.consumer.state()
            if state is not last:
                alive = state is not ConsumerState.STUCK
                await self.health.health.set(LIVENESS_SERVICE, serving if alive else not_serving)
                running = state is ConsumerState.RUNNING
                await self.health.health.set("", serving if running else not_serving)
                if last is not None or state is not ConsumerState.RUNNING:
                    log_state = log.error if state is ConsumerState.STUCK else log.info
                    log_state("consumer state changed", extra={"state": state.value})
                last = state
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), WATCH_SECONDS)

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
        lease = asyncio.create_task(self.lease.run(stop))
        watchdog = asyncio.create_task(self.watch_health(stop))
        relay = asyncio.create_task(self.relay.run(stop)) if self.relay is not None else None
        try:
            await self.consumer.run(stop, grace_seconds=grace)
        finally:
            stop.set()  # the consumer may have ended by an error: the renderer ends with it
            await renderer
            await asyncio.gather(
                lease, watchdog, *([relay] if relay is not None else []), return_exceptions=True
            )
            housekeeping.cancel()
            await self.health.stop()
        log.info("processor stopped")


async def build_processor(settings: ProcessorSettings, stack: AsyncExitStack) -> ProcessorApp:
    runner = IsolatedRunner(settings.job_slots, settings.job_limits)
    stack.callback(runner.close)
    await asyncio.get_running_loop().run_in_executor(None, runner.warm_up)
    pool = await create_pool(
        settings.base.database_url,
        max_size=max(4, settings.concurrency * 2),
        acquire_timeout=None,
        name="processor",
        probe=True,
    )
    stack.push_async_callback(pool.close)
    await wait_for_schema(pool, timeout_seconds=settings.base.schema_wait_seconds)
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
        stall_seconds=settings.stall_seconds,
        wait_seconds=settings.poll_seconds,
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
    lease = PostgresLease(settings.base.database_url)
    dead_letters = SqsMessageQueue(sqs, settings.dlq_url)

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
        versions=store,  # brings back an original from S3 versioning (a database restore)
    )

    async def reconcile() -> object:
        return await reconciler.run(dry_run=settings.reconcile_dry_run)

    cdn = None
    if settings.cloudfront_distribution_id is not None:
        cloudfront = await stack.enter_async_context(cloudfront_client(settings.base.aws))
        cdn = CloudFrontInvalidator(cloudfront, settings.cloudfront_distribution_id)
    takedown = TakedownJob(PostgresTakedowns(pool), store, cdn)
    housekeeping = Housekeeping(
        [
            ("unreferenced content", collector.sweep),
            ("unfinished uploads", reaper.sweep),
            ("retention", _retention(settings, pool, lease.leading)),
            ("expired request ids", PostgresUploadRequests(pool).prune),
            ("dead letters", RedriveDeadLetters(dead_letters, queue, probe)),
            ("operator jobs", _admin_jobs(settings, pool, store, reconciler, takedown)),
            (
                "bucket and database",
                Every(
                    settings.reconcile_interval_seconds,
                    reconcile,
                    at_start=settings.reconcile_at_start,
                ),
            ),
        ],
        {"uploads": queue, "dead_letter": dead_letters},
        interval_seconds=settings.gc_interval_seconds,
        leading=lease.leading,
    )
    lane = runner.lane(settings.render_concurrency)
    stack.callback(lane.close)
    renderer = _renderer(settings, pool, store, lane)
    relay = None
    if settings.events_topic_arn is not None:
        sns = await stack.enter_async_context(sns_client(settings.base.aws))
        relay = EventRelay(
            PostgresEventOutbox(pool),
            SnsEventPublisher(sns, settings.events_topic_arn),
            poll_seconds=settings.events_poll_seconds,
        )
    return ProcessorApp(
        consumer, housekeeping, renderer, GrpcServer([], grace_seconds=1), settings, lease, relay
    )


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
    settings: ProcessorSettings,
    pool: asyncpg.Pool,
    store: S3ObjectStore,
    reconciler: Reconciler,
    takedown: TakedownJob,
) -> RunAdminJobs:
    jobs = PostgresAdminJobs(pool)
    backfill = Backfill(
        PostgresBackfills(pool),
        jobs,
        settings.render.presets,
        per_minute=settings.backfill_per_minute,
    )
    # `imagery-admin reconcile`: the periodic pass's reconciler, with the operator's options
    reconcile = ReconcileJob(reconciler, PostgresReconcileJobs(pool))
    return RunAdminJobs(jobs, store, backfill=backfill, reconcile=reconcile, takedown=takedown)


def _retention(
    settings: ProcessorSettings, pool: asyncpg.Pool, leading: Callable[[], bool]
) -> PruneRetained:
    """What each table keeps. A FAILED record outlives its retained bytes, which the
    reconciler keeps for RETAINED_FAILED_DAYS while their record wants them."""
    failed_days = max(settings.retention_failed_days, settings.retained_failed_days)
    rules = [
        RetentionRule("audit_events", settings.retention_audit_days),
        RetentionRule("image_deletions", settings.retention_deletion_feed_days),
        RetentionRule("failed_images", failed_days),
        RetentionRule("admin_jobs", settings.retention_admin_jobs_days),
        RetentionRule("event_outbox", settings.retention_events_days),
    ]
    return PruneRetained(PostgresRetention(pool), rules, leading=leading)
