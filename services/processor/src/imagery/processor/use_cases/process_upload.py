"""One upload, from S3 event to terminal state. No SQS here (the consumer owns messages).

Every path ends in exactly one of: READY, FAILED (both committed, upload object deleted),
DUPLICATE (already terminal: only cleanup), UNKNOWN (no record: object deleted), DROPPED (no
object yet: the record stays pending for the client's PUT, or for the sweep to end it
NOT_UPLOADED), or BUSY (another worker holds a fresh claim, or the same content is being
collected: the message must come back later). Anything raised (transient S3/DB trouble,
shutdown) gives the claim back first.

New content is written in three steps, none holding a transaction across S3: reserve the
content's row (collection keeps off it), write the objects, then one unit of work references
the content and marks the record ready.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import enum
import hashlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from opentelemetry import metrics, trace
from opentelemetry.trace import Span, Status, StatusCode

from imagery.common.domain import ImageRecord, VariantInfo
from imagery.common.formats import ALLOWED_CONTENT_TYPES, content_type_of
from imagery.common.storage_keys import (
    GLOBAL_SCOPE,
    VARIANT_CACHE_CONTROL,
    original_key,
    variant_key,
)
from imagery.common.telemetry import link_to
from imagery.processor.imaging import Limits, Processed, Rejected, Rendered, RenderSpec, Verified
from imagery.processor.ports import (
    ImageJobs,
    Images,
    Objects,
    ObjectTooLarge,
    Outcomes,
    VerifiedImage,
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


class ProcessUpload(Protocol):
    """Take one upload (its image id and upload key) to a terminal state, or say BUSY."""

    async def __call__(self, image_id: str, key: str) -> Result: ...


_METER = metrics.get_meter(__name__)
_JOBS = _METER.create_counter(
    "imagery.processor.jobs", description="Uploads by outcome and failure reason"
)
_STAGE = _METER.create_histogram(
    "imagery.processor.stage.duration", unit="ms", description="Time per processing stage"
)
_TO_READY = _METER.create_histogram(
    "imagery.processor.upload_to_ready", unit="s", description="From CreateUploadUrl to READY"
)


def _record(span: Span, result: Result) -> None:
    """Span attributes and metrics of one outcome (never file names or URLs)."""
    span.set_attribute("imagery.outcome", result.outcome.value)
    if result.reason:
        span.set_attribute("imagery.failure_reason", result.reason)
        span.set_status(Status(StatusCode.ERROR, result.reason))
    _JOBS.add(1, {"outcome": result.outcome.value, "reason": result.reason or ""})
    for stage, ms in result.stages_ms.items():
        _STAGE.record(ms, {"stage": stage})
    if result.created_at is not None and result.outcome is Outcome.READY:
        _TO_READY.record((datetime.now(UTC) - result.created_at).total_seconds())
    if result.image is not None:
        span.set_attribute("image.size_bytes", result.image.size_bytes)
        span.set_attribute("image.format", result.image.format)


class _Stages:
    """Wall time per processing stage, for logs, metrics and the benchmark."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            elapsed = (time.perf_counter() - started) * 1000
            self.ms[name] = round(self.ms.get(name, 0.0) + elapsed, 2)


class _ContentBusy(Exception):
    """The same content is being collected right now: process the upload again later."""


class _NotProcessing(Exception):
    """The record stopped being `processing` (another worker finished it, or it was deleted)."""


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
    ) -> None:
        self._max_attempts = max_attempts
        self._spec = spec or RenderSpec()
        self._images = images
        self._outcomes = outcomes
        self._objects = objects
        self._jobs = jobs
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
        record = await self._images.find_by_id(image_id)
        if record is not None:
            for link in link_to(record.trace_context):  # back to CreateUploadUrl's trace
                span.add_link(link.context)
            span.set_attribute("image.content_type", record.content_type)
        if record is None:
            log.warning("upload without a record: deleting it", extra={"image_id": image_id})
            await self._objects.delete(key)
            return Result(Outcome.UNKNOWN)
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
        except _NotProcessing:  # our claim went stale and another worker finished the record
            return Result(Outcome.DUPLICATE)
        except _ContentBusy:
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

    async def _process(self, record: ImageRecord, key: str) -> Result:
        stage = _Stages()
        try:
            with stage("download"):
                data = await self._objects.get(key, max_bytes=self._max_upload_bytes)
        except ObjectTooLarge as too_large:
            return await self._fail(record, key, "TOO_LARGE", stage, size=too_large.size)
        if data is None:  # an early or forged event: the real PUT may still come
            await self._outcomes.release_claim(record.id)
            return Result(Outcome.DROPPED, None, stage.ms)
        if not data:
            return await self._fail(record, key, "EMPTY", stage, size=0)
        linked = await self._link_known_content(record, key, data, stage)
        if linked is not None:
            return linked
        attempt = await self._outcomes.start_attempt(record.id)
        if attempt is None:
            raise _NotProcessing
        if attempt > self._max_attempts:  # it failed for reasons nobody recognised, every time
            return await self._fail(record, key, "RETRIES_EXHAUSTED", stage, size=len(data))
        try:
            with stage("verify"):
                job = await self._jobs.verify_and_render(
                    data, record.content_type, self._limits, self._spec
                )
        except Rejected as rejected:
            log.info(
                "upload rejected",
                extra={"image_id": record.id, "reason": rejected.reason, "detail": rejected.detail},
            )
            return await self._fail(
                record, key, rejected.reason, stage, size=len(data), rss=rejected.peak_rss_bytes
            )
        processed = job.processed
        verified = processed.verified
        image = VerifiedImage(
            verified.sha256, verified.format, verified.width, verified.height, verified.size_bytes
        )
        variants = [_variant_info(verified.sha256, v) for v in processed.variants]
        with stage("reserve"):
            async with self._outcomes.unit_of_work() as uow:
                if not await uow.reserve_content(image, variants):
                    raise _ContentBusy
        await self._store(key, data, verified, processed, stage)
        with stage("commit"):
            async with self._outcomes.unit_of_work() as uow:
                if not await uow.lock_processing(record.id):
                    raise _NotProcessing
                if not await uow.reference_content(image.sha256):  # the reservation lapsed
                    raise _ContentBusy
                await uow.mark_ready(record.id, image)
        with stage("cleanup"):
            await self._objects.delete(key)
        return Result(Outcome.READY, None, stage.ms, job.peak_rss_bytes, image, record.created_at)

    async def _link_known_content(
        self, record: ImageRecord, key: str, data: bytes, stage: _Stages
    ) -> Result | None:
        """Known content whose objects are all there: link to it, nothing re-verified,
        re-rendered or re-stored. Known content with objects missing (a lifecycle rule, a hand
        deletion, a local S3 that started empty) is not linked: processing these bytes as new
        content writes its objects again."""
        with stage("hash"):
            sha256 = await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())
        declared = ALLOWED_CONTENT_TYPES.get(record.content_type, "")
        with stage("check"):
            keys = await self._outcomes.stored_keys(sha256)
            found = await asyncio.gather(*(self._objects.head(k) for k in keys or ()))
        if keys and not all(found):
            log.warning(
                "known content has lost objects: rebuilding them from this upload",
                extra={"sha256": sha256, "missing": sum(1 for f in found if f is None)},
            )
            return None
        with stage("commit"):
            async with self._outcomes.unit_of_work() as uow:
                if not await uow.lock_processing(record.id):
                    raise _NotProcessing
                linked = await uow.link_stored_content(sha256, declared)
                if linked.linked and linked.image is not None:
                    await uow.mark_ready(record.id, linked.image)
        if linked.mismatch is not None:
            return await self._fail(record, key, "CONTENT_TYPE_MISMATCH", stage, size=len(data))
        if not linked.linked:
            return None
        with stage("cleanup"):
            await self._objects.delete(key)
        return Result(Outcome.READY, None, stage.ms, None, linked.image, record.created_at)

    async def _store(
        self, key: str, data: bytes, verified: Verified, processed: Processed, stage: _Stages
    ) -> None:
        """Original and variants, all at once."""
        with stage("store"):
            await asyncio.gather(
                self._store_original(key, data, verified),
                *(
                    self._objects.put(
                        variant_key(GLOBAL_SCOPE, verified.sha256, v.name, v.format),
                        v.body,
                        content_type=v.content_type,
                        cache_control=VARIANT_CACHE_CONTROL,
                    )
                    for v in processed.variants
                ),
            )

    async def _store_original(self, key: str, data: bytes, verified: Verified) -> None:
        """The upload object copied in place by S3 (the bytes are not sent again), kept only if
        S3's own SHA-256 of the copy is the verified one: a client that re-PUT its upload URL
        after we read it gets our verified bytes written over the copy instead."""
        target = original_key(GLOBAL_SCOPE, verified.sha256)
        content_type = content_type_of(verified.format)
        copied = await self._objects.copy(key, target, content_type=content_type)
        if copied != base64.b64encode(bytes.fromhex(verified.sha256)).decode():
            log.info(
                "the upload changed or went after it was read: storing the verified bytes",
                extra={"key": key},
            )
            await self._objects.put(target, data, content_type=content_type)

    async def _fail(
        self,
        record: ImageRecord,
        key: str,
        reason: str,
        stage: _Stages,
        *,
        size: int | None = None,
        rss: int | None = None,
    ) -> Result:
        with stage("commit"):
            marked = await self._outcomes.mark_failed(record.id, reason, size_bytes=size)
        if not marked:
            return Result(Outcome.DUPLICATE)
        with stage("cleanup"):
            await self._objects.delete(key)
        return Result(Outcome.FAILED, reason, stage.ms, rss)


def _variant_info(sha256: str, rendered: Rendered) -> VariantInfo:
    return VariantInfo(
        rendered.name,
        rendered.format,
        rendered.content_type,
        rendered.width,
        rendered.height,
        len(rendered.body),
        variant_key(GLOBAL_SCOPE, sha256, rendered.name, rendered.format),
    )
