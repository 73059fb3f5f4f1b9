"""One upload, from S3 event to terminal state. No SQS here (the consumer owns messages).

Every path ends in exactly one of: READY, FAILED (both committed, upload object deleted; a
failure that may not be the file's fault keeps a copy under `retained/` first),
DUPLICATE (already terminal: only cleanup), UNKNOWN (no record: object deleted), DROPPED (no
object yet: the record stays pending for the client's PUT, or for the sweep to end it
NOT_UPLOADED), or BUSY (another worker holds a fresh claim, or the same content is being
collected: the message must come back later). Anything raised (transient S3/DB trouble,
shutdown) gives the claim back first.

Content is linked or stored by `store_content.ContentWriter`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import hashlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from opentelemetry import metrics, trace
from opentelemetry.trace import Span, Status, StatusCode

from imagery.common.domain import ImageRecord
from imagery.common.errors import FailureReason
from imagery.common.formats import ALLOWED_CONTENT_TYPES
from imagery.common.metrics import PROCESSING_SECONDS
from imagery.common.profiles import default_profile
from imagery.common.storage_keys import GLOBAL_SCOPE, RETAINABLE_REASONS, retained_key
from imagery.common.telemetry import link_to
from imagery.common.tenancy import (
    EffectiveSettings,
    ProjectSettings,
    SettingsPolicy,
    content_address,
)
from imagery.common.upload_limits import UploadLimits
from imagery.processor.imaging import Limits, Rejected, RenderSpec
from imagery.processor.ports import (
    ImageJobs,
    Images,
    Objects,
    ObjectTooLarge,
    Outcomes,
    RetryLater,
    VerifiedImage,
)
from imagery.processor.use_cases.store_content import (
    ContentBlocked,
    ContentBusy,
    ContentWriter,
    NotProcessing,
    Stages,
)

log = logging.getLogger(__name__)


class Outcome(enum.Enum):
    READY = "ready"
    FAILED = "failed"
    DUPLICATE = "duplicate"
    UNKNOWN = "unknown"
    DROPPED = "dropped"
    BUSY = "busy"

    @property
    def done(self) -> bool:
        """The message may be deleted."""
        return self is not Outcome.BUSY


@dataclass(frozen=True, slots=True)
class Result:
    outcome: Outcome
    reason: str | None = None
    stages_ms: dict[str, float] = field(default_factory=dict)  # download, verify, ...
    peak_rss_bytes: int | None = None  # of the isolated job process
    image: VerifiedImage | None = None
    created_at: datetime | None = None
    project: str = ""  # the upload's project, for metrics ("" when there is no record)


class ProcessUpload(Protocol):
    """Take one upload (its image id and upload key) to a terminal state, or say BUSY."""

    async def __call__(self, image_id: str, key: str) -> Result: ...


_METER = metrics.get_meter(__name__)
_JOBS = _METER.create_counter(
    "imagery.processor.jobs", description="Uploads by outcome and failure reason"
)
_STAGE = _METER.create_histogram(
    "imagery.processor.stage.duration",
    unit="s",
    description="Time per processing stage",
    explicit_bucket_boundaries_advisory=PROCESSING_SECONDS,
)
_TO_READY = _METER.create_histogram(
    "imagery.processor.upload_to_ready",
    unit="s",
    description="From CreateUploadUrl to READY, by project",
    explicit_bucket_boundaries_advisory=PROCESSING_SECONDS,
)


def _record(span: Span, result: Result) -> None:
    """Span attributes and metrics of one outcome (never file names or URLs)."""
    span.set_attribute("imagery.outcome", result.outcome.value)
    if result.reason:
        span.set_attribute("imagery.failure_reason", result.reason)
        span.set_status(Status(StatusCode.ERROR, result.reason))
    project = {"project": result.project}
    _JOBS.add(1, {"outcome": result.outcome.value, "reason": result.reason or "", **project})
    for stage, ms in result.stages_ms.items():
        _STAGE.record(ms / 1000, {"stage": stage})
    if result.created_at is not None and result.outcome is Outcome.READY:
        _TO_READY.record((datetime.now(UTC) - result.created_at).total_seconds(), project)
    if result.image is not None:
        span.set_attribute("image.size_bytes", result.image.size_bytes)
        span.set_attribute("image.format", result.image.format)


class UploadProcessor:
    def __init__(
        self,
        images: Images,
        outcomes: Outcomes,
        objects: Objects,
        jobs: ImageJobs,
        *,
        limits: Limits,
        max_upload_bytes: int,
        claim_stale_seconds: float,
        max_attempts: int = 5,
        spec: RenderSpec | None = None,
        policy: SettingsPolicy | None = None,
        retained_days: int = 7,
    ) -> None:
        self._policy = policy
        self._retained_days = retained_days  # 0: keep nothing
        self._max_attempts = max_attempts
        self._spec = spec or RenderSpec()
        # What a project that chose no profile gets: the deployment's presets, version 0.
        self._default_profile = default_profile(self._spec.presets)
        self._images = images
        self._outcomes = outcomes
        self._objects = objects
        self._jobs = jobs
        self._content = ContentWriter(outcomes, objects)
        self._limits = limits
        self._max_upload_bytes = max_upload_bytes
        self._claim_stale_seconds = claim_stale_seconds
        # Claims this process could not give back (the database went away mid-job): nobody
        # else works on them, so the next delivery may take them over at once instead of
        # waiting out the stale-claim timeout meant for crashed processes.
        self._abandoned: set[str] = set()

    async def __call__(self, image_id: str, key: str) -> Result:
        span = trace.get_current_span()  # the consumer's span for this upload
        result = await self._process_traced(image_id, key, span)
        _record(span, result)
        return result

    async def _process_traced(self, image_id: str, key: str, span: Span) -> Result:
        record = await self._images.find_for_processing(image_id)
        if record is None:
            log.warning("upload without a record: deleting it", extra={"image_id": image_id})
            await self._objects.delete(key)
            return Result(Outcome.UNKNOWN)
        for link in link_to(record.trace_context):  # back to CreateUploadUrl's trace
            span.add_link(link.context)
        span.set_attribute("image.content_type", record.content_type)
        result = await self._process_record(record, key)
        return dataclasses.replace(result, project=record.project_id)

    async def _process_record(self, record: ImageRecord, key: str) -> Result:
        image_id = record.id
        if record.status.terminal:
            await self._objects.delete(key)  # a crash after commit may have left it
            return Result(Outcome.DUPLICATE)
        stale_after = 0 if image_id in self._abandoned else self._claim_stale_seconds
        claimed = await self._images.claim_for_processing(image_id, stale_after_seconds=stale_after)
        if claimed is None:
            return Result(Outcome.BUSY)
        self._abandoned.discard(image_id)
        try:
            return await self._process(claimed, key)
        except NotProcessing:  # our claim went stale and another worker finished the record
            return Result(Outcome.DUPLICATE)
        except ContentBusy:
            await self._release(image_id)
            return Result(Outcome.BUSY)
        except BaseException:
            await asyncio.shield(self._release(image_id))
            raise

    async def _release(self, image_id: str) -> None:
        try:
            await self._outcomes.release_claim(image_id)
        except Exception as exc:  # noqa: BLE001 - the original error is what propagates
            self._abandoned.add(image_id)
            log.warning("could not release claim", extra={"image_id": image_id, "error": str(exc)})

    def _settings(self, record: ImageRecord) -> EffectiveSettings | None:
        if self._policy is None:
            return None
        return self._policy.effective(record.project_settings or ProjectSettings())

    async def _process(self, record: ImageRecord, key: str) -> Result:
        stage = Stages()
        settings = self._settings(record)
        max_bytes = settings.max_upload_bytes if settings else self._max_upload_bytes
        try:
            with stage("download"):
                data = await self._objects.get(key, max_bytes=max_bytes)
        except ObjectTooLarge as too_large:
            return await self._fail(record, key, FailureReason.TOO_LARGE, stage, too_large.size)
        if data is None:  # an early or forged event: the real PUT may still come
            await self._outcomes.release_claim(record.id)
            return Result(Outcome.DROPPED, None, stage.ms)
        if not data:
            return await self._fail(record, key, FailureReason.EMPTY, stage, 0)
        with stage("hash"):
            sha256 = await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())
        if await self._outcomes.is_blocked(sha256):
            return await self._fail(record, key, FailureReason.BLOCKED, stage, len(data))
        try:
            return await self._link_or_store(record, key, data, sha256, stage, settings)
        except ContentBlocked:  # taken down while this upload was being processed
            return await self._fail(record, key, FailureReason.BLOCKED, stage, len(data))

    async def _link_or_store(
        self,
        record: ImageRecord,
        key: str,
        data: bytes,
        sha256: str,
        stage: Stages,
        settings: EffectiveSettings | None,
    ) -> Result:
        declared = ALLOWED_CONTENT_TYPES.get(record.content_type, "")
        address = content_address(record.content_scope, sha256)
        own = record.upload_limits
        if own is not None and own.frames is not None:
            # Known content records no frame count: such an upload is verified in a job.
            return await self._process_new(record, key, data, sha256, stage, settings)
        linked = await self._content.link(
            record,
            address,
            declared,
            stage,
            sha256,
            lambda width, height: _outside_project_limits(width, height, settings, own),
        )
        if linked.refused is not None:
            return await self._fail(record, key, linked.refused, stage, len(data))
        if linked.mismatch is not None:
            return await self._fail(
                record, key, FailureReason.CONTENT_TYPE_MISMATCH, stage, len(data)
            )
        if linked.linked:
            return await self._ready(key, stage, linked.image, record, peak_rss=None)
        return await self._process_new(record, key, data, sha256, stage, settings)

    async def _process_new(
        self,
        record: ImageRecord,
        key: str,
        data: bytes,
        sha256: str,
        stage: Stages,
        settings: EffectiveSettings | None,
    ) -> Result:
        attempt = await self._outcomes.start_attempt(record.id)
        if attempt is None:
            raise NotProcessing
        if attempt > self._max_attempts:  # it failed for reasons nobody recognised, every time
            return await self._fail(record, key, FailureReason.RETRIES_EXHAUSTED, stage, len(data))
        profile = record.project_profile or self._default_profile
        spec = dataclasses.replace(
            self._spec,
            presets=profile.at_ingest,
            blurhash_components=profile.blurhash_components,
        )
        try:
            with stage("verify"):
                job = await self._jobs.verify_and_render(
                    data, record.content_type, _job_limits(self._limits, record.upload_limits), spec
                )
        except Rejected as rejected:
            if rejected.by_the_kernel and attempt < 2:
                raise RetryLater(f"the kernel killed the job ({rejected.detail})") from None
            log.info(
                "upload rejected",
                extra={"image_id": record.id, "reason": rejected.reason, "detail": rejected.detail},
            )
            return await self._fail(
                record, key, rejected.reason, stage, len(data), rejected.peak_rss_bytes
            )
        verified = job.processed.verified
        if (verified.sha256, verified.size_bytes) != (sha256, len(data)):
            raise RetryLater("the job described other bytes than it was given")
        refused = _outside_project_limits(
            verified.width, verified.height, settings, record.upload_limits
        )
        if refused is not None:
            return await self._fail(record, key, refused, stage, len(data), job.peak_rss_bytes)
        address = content_address(record.content_scope, sha256)
        image = await self._content.store(
            record, key, data, job.processed, stage, address, profile.version
        )
        return await self._ready(key, stage, image, record, peak_rss=job.peak_rss_bytes)

    async def _ready(
        self,
        key: str,
        stage: Stages,
        image: VerifiedImage | None,
        record: ImageRecord,
        *,
        peak_rss: int | None,
    ) -> Result:
        with stage("cleanup"):
            await self._objects.delete(key)
        return Result(Outcome.READY, None, stage.ms, peak_rss, image, record.created_at)

    async def _fail(
        self,
        record: ImageRecord,
        key: str,
        reason: str,
        stage: Stages,
        size: int | None = None,
        rss: int | None = None,
    ) -> Result:
        retained_days = await self._retain(record, key, reason, stage)
        with stage("commit"):
            marked = await self._outcomes.mark_failed(
                record.id, reason, size_bytes=size, retained_days=retained_days
            )
        if not marked:
            return Result(Outcome.DUPLICATE)
        with stage("cleanup"):
            await self._objects.delete(key)
        return Result(Outcome.FAILED, reason, stage.ms, rss)

    async def _retain(
        self, record: ImageRecord, key: str, reason: str, stage: Stages
    ) -> int | None:
        """Before the record is FAILED for a reason that may not be the file's fault: copy the
        upload to `retained/`, so `imagery-admin reprocess` can run it again; the days it is
        kept, or None when nothing is kept. Copied before the commit, so a crash in between
        only copies again when the message comes back."""
        if reason not in RETAINABLE_REASONS or not self._retained_days:
            return None
        with stage("retain"):
            copied = await self._objects.copy(
                key, retained_key(GLOBAL_SCOPE, record.id), content_type=record.content_type
            )
        return None if copied is None else self._retained_days


def _job_limits(limits: Limits, own: UploadLimits | None) -> Limits:
    """The deployment's limits, narrowed by those the upload asked for, so the job refuses
    before decoding: pixels and frames (1 without animation) exactly, sides by the longer of
    the upload's maximums (the exact check is on the displayed size, after the job)."""
    if own is None:
        return limits
    side = limits.max_side
    if own.max_width and own.max_height:
        side = min(side, max(own.max_width, own.max_height))
    return dataclasses.replace(
        limits,
        max_side=side,
        max_pixels=min(limits.max_pixels, own.max_pixels or limits.max_pixels),
        max_frames=min(limits.max_frames, own.frames or limits.max_frames),
    )


def _outside_project_limits(
    width: int,
    height: int,
    settings: EffectiveSettings | None,
    own: UploadLimits | None = None,
) -> FailureReason | None:
    """The project's own dimension limits, and the upload's, checked on the verified
    (displayed) size."""
    if own is not None and (
        width > (own.max_width or width)
        or height > (own.max_height or height)
        or width * height > (own.max_pixels or width * height)
    ):
        return FailureReason.DIMENSIONS_EXCEEDED
    if settings is None:
        return None
    if width > settings.max_width or height > settings.max_height:
        return FailureReason.DIMENSIONS_EXCEEDED
    if width < settings.min_width or height < settings.min_height:
        return FailureReason.TOO_SMALL
    return None
