"""Processor settings: the shared ones, the queue, concurrency, limits."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from imagery.common.config import ConfigError, Env, Settings, load_service_settings
from imagery.common.presets import DEFAULT_PRESETS_SPEC, parse_presets
from imagery.processor.adapters.isolation import JobLimits
from imagery.processor.imaging import Limits, RenderSpec

DEFAULT_HEALTH_PORT = 50053


@dataclass(frozen=True, slots=True)
class ProcessorSettings:
    base: Settings
    queue_url: str
    dlq_url: str
    concurrency: int  # uploads in flight (download, store, commit overlap the jobs)
    job_slots: int  # image jobs running at once: the CPU-bound part, one core each
    project_max_in_flight: int | None  # one project's share of `concurrency`; None: no cap
    limits: Limits
    job_limits: JobLimits
    claim_stale_seconds: int
    max_attempts: int
    shutdown_grace_seconds: float
    retry_base_seconds: int
    gc_interval_seconds: int
    content_grace_seconds: int
    reconcile_interval_seconds: int
    reconcile_grace_seconds: int
    reconcile_dry_run: bool
    reconcile_at_start: bool
    abandoned_after_seconds: int
    render: RenderSpec
    render_concurrency: int  # renders after ingest at once, in job slots of their own
    render_poll_seconds: float  # how often an idle renderer looks for render asks
    # The consumer loop is stuck (liveness NOT_SERVING) when it has not turned for this long
    # while not paused on purpose.
    stall_seconds: int
    poll_seconds: int  # SQS long poll: the longest an idle loop waits for one turn
    backfill_per_minute: int  # renders a backfill job asks for per minute, at most
    # Days the bytes of an upload that failed for a retainable reason are kept under
    # `retained/` for `imagery-admin reprocess` (the bucket's `retained/` rule expires them).
    retained_failed_days: int = 7
    # Retention in days (at least 1): housekeeping prunes what is older. A FAILED record
    # stays at least as long as its retained bytes (RETAINED_FAILED_DAYS) too.
    retention_audit_days: int = 400  # an audit trail is kept over a year
    retention_deletion_feed_days: int = 1
    retention_failed_days: int = 30
    retention_admin_jobs_days: int = 90
    retention_events_days: int = 7  # the event outbox, published or not
    # The SNS topic image events go to (None: the outbox is kept, nothing is published).
    events_topic_arn: str | None = None
    events_poll_seconds: float = 0.5  # how often an idle relay looks for events
    # The distribution takedowns invalidate (None: takedowns delete, and invalidate nothing).
    cloudfront_distribution_id: str | None = None


def load_settings(environ: Mapping[str, str] | None = None) -> ProcessorSettings:
    # The processor serves only gRPC health, on PROCESSOR_HEALTH_PORT (GRPC_PORT also works).
    return load_service_settings(
        environ,
        _build,
        default_port=DEFAULT_HEALTH_PORT,
        port_variable="PROCESSOR_HEALTH_PORT",
    )


def _build(env: Env, base: Settings) -> ProcessorSettings:
    job_wall = env.integer("PROCESSOR_JOB_TIMEOUT_SECONDS", 60, minimum=1)
    poll_seconds = env.integer("PROCESSOR_POLL_SECONDS", 20, minimum=1, maximum=20)
    job_slots = env.integer("PROCESSOR_JOB_SLOTS", os.cpu_count() or 2, minimum=1, maximum=64)
    concurrency = env.integer("PROCESSOR_CONCURRENCY", 2 * job_slots, minimum=1, maximum=64)
    # All but one of the uploads in flight: a lone project keeps its I/O overlapping its jobs,
    # and one place is always free for another project's upload.
    project_cap = env.integer(
        "PROCESSOR_PROJECT_MAX_IN_FLIGHT", max(1, concurrency - 1), maximum=concurrency
    )
    return ProcessorSettings(
        base=base,
        queue_url=env.required(
            "SQS_QUEUE_URL", "the queue that receives the bucket's upload events"
        ),
        dlq_url=env.required("SQS_DLQ_URL", "the dead-letter queue of SQS_QUEUE_URL"),
        concurrency=concurrency,
        job_slots=job_slots,
        project_max_in_flight=project_cap or None,
        limits=Limits(
            max_side=env.integer("MAX_IMAGE_SIDE", 10_000, minimum=1),
            max_pixels=env.integer("MAX_IMAGE_PIXELS", 40_000_000, minimum=1),
            max_frames=env.integer("MAX_IMAGE_FRAMES", 100, minimum=1),
            max_total_pixels=env.integer("MAX_IMAGE_TOTAL_PIXELS", 400_000_000, minimum=1),
            max_scans=env.integer("MAX_JPEG_SCANS", 100, minimum=1),
        ),
        job_limits=JobLimits(
            memory_bytes=env.integer("PROCESSOR_JOB_MEMORY_BYTES", 1024**3, minimum=64 * 1024**2),
            cpu_seconds=env.integer("PROCESSOR_JOB_CPU_SECONDS", 30, minimum=1),
            wall_seconds=float(job_wall),
        ),
        claim_stale_seconds=env.integer("PROCESSOR_CLAIM_STALE_SECONDS", 300, minimum=job_wall + 1),
        max_attempts=env.integer("PROCESSOR_MAX_ATTEMPTS", 5, minimum=1),
        shutdown_grace_seconds=float(
            env.integer("PROCESSOR_SHUTDOWN_GRACE_SECONDS", 25, minimum=0)
        ),
        retry_base_seconds=env.integer("PROCESSOR_RETRY_BASE_SECONDS", 5, minimum=0),
        gc_interval_seconds=env.integer("PROCESSOR_GC_INTERVAL_SECONDS", 60, minimum=1),
        content_grace_seconds=env.integer("PROCESSOR_CONTENT_GRACE_SECONDS", 600, minimum=0),
        reconcile_interval_seconds=env.integer(
            "PROCESSOR_RECONCILE_INTERVAL_SECONDS", 3600, minimum=1
        ),
        reconcile_grace_seconds=env.integer("PROCESSOR_RECONCILE_GRACE_SECONDS", 3600, minimum=0),
        reconcile_dry_run=env.choice("PROCESSOR_RECONCILE_DRY_RUN", "off", ("on", "off")) == "on",
        reconcile_at_start=env.choice("PROCESSOR_RECONCILE_AT_START", "off", ("on", "off")) == "on",
        # An upload URL unused an hour after it expired will not be used any more.
        abandoned_after_seconds=env.integer(
            "PROCESSOR_ABANDONED_AFTER_SECONDS", base.upload_url_expiry_seconds + 3600, minimum=1
        ),
        render=RenderSpec(
            presets=parse_presets(env.optional("VARIANT_PRESETS", DEFAULT_PRESETS_SPEC)),
            avif=env.choice("VARIANT_AVIF", "off", ("on", "off")) == "on",
        ),
        render_concurrency=env.integer("RENDER_CONCURRENCY", 1, minimum=1, maximum=64),
        render_poll_seconds=_seconds(env, "RENDER_POLL_SECONDS", 0.5),
        # Longer than anything a turn may wait on: a long poll (20 s) or the SQS client's
        # read timeout (30 s), and a job at its wall-clock limit.
        stall_seconds=env.integer(
            "PROCESSOR_STALL_SECONDS", max(180, 2 * job_wall), minimum=poll_seconds + 5
        ),
        poll_seconds=poll_seconds,
        backfill_per_minute=env.integer("BACKFILL_PER_MINUTE", 600, minimum=1),
        retained_failed_days=env.integer("RETAINED_FAILED_DAYS", 7, minimum=1, maximum=3650),
        retention_audit_days=env.integer("RETENTION_AUDIT_DAYS", 400, minimum=30, maximum=36500),
        retention_deletion_feed_days=env.integer(
            "RETENTION_DELETION_FEED_DAYS", 1, minimum=1, maximum=36500
        ),
        retention_failed_days=env.integer("RETENTION_FAILED_DAYS", 30, minimum=1, maximum=36500),
        retention_admin_jobs_days=env.integer(
            "RETENTION_ADMIN_JOBS_DAYS", 90, minimum=1, maximum=36500
        ),
        retention_events_days=env.integer("RETENTION_EVENTS_DAYS", 7, minimum=1, maximum=36500),
        events_topic_arn=_topic_arn(env),
        events_poll_seconds=_seconds(env, "EVENTS_POLL_SECONDS", 0.5),
        cloudfront_distribution_id=env.optional("CLOUDFRONT_DISTRIBUTION_ID", "").strip() or None,
    )


def _topic_arn(env: Env) -> str | None:
    value = env.optional("EVENTS_TOPIC_ARN", "").strip()
    if value and (not value.startswith("arn:") or value.split(":")[2:3] != ["sns"]):
        raise ConfigError(
            f"EVENTS_TOPIC_ARN={value[:100]!r} is not an SNS topic ARN: set it to the topic's "
            "ARN (arn:aws:sns:REGION:ACCOUNT:NAME), or leave it unset to publish no events."
        )
    return value or None


def _seconds(env: Env, name: str, default: float) -> float:
    """A positive number of seconds, fractions allowed."""
    value = env.raw(name)
    if value is None:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds <= 3600:
        raise ConfigError(f"{name}={value!r} is not a number of seconds > 0 and <= 3600.")
    return seconds
