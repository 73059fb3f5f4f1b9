"""One upload, from S3 event to terminal state. No SQS here (the consumer owns messages);
no gRPC, asyncpg or aioboto3: only ports.

Every path ends in exactly one of: READY, FAILED (both committed, upload object deleted),
DUPLICATE (already terminal: only cleanup), UNKNOWN (no record: object deleted), or BUSY
(another worker holds a fresh claim: the message must come back later). Anything raised
(transient S3/DB trouble, shutdown) gives the claim back first.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from imagery.common.aws.s3 import ObjectTooLarge
from imagery.common.db.outcomes import NotProcessing, VerifiedImage
from imagery.common.domain import ImageRecord
from imagery.processor.isolation import JobKilled
from imagery.processor.ports import Images, IsolatedWork, Objects, Outcomes
from imagery.processor.verify import Limits, Rejected, Verified, verify

log = logging.getLogger(__name__)


class Outcome(enum.Enum):
    READY = "ready"
    FAILED = "failed"
    DUPLICATE = "duplicate"
    UNKNOWN = "unknown"
    BUSY = "busy"

    @property
    def done(self) -> bool:
        """The message may be deleted."""
        return self is not Outcome.BUSY


@dataclass(frozen=True, slots=True)
class Result:
    outcome: Outcome
    reason: str | None = None
    stages_ms: dict[str, float] = field(default_factory=dict)  # head, download, verify, ...
    peak_rss_bytes: int | None = None  # of the isolated job process


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
            self.ms[name] = round((time.perf_counter() - started) * 1000, 2)


class UploadProcessor:
    def __init__(
        self,
        images: Images,
        outcomes: Outcomes,
        objects: Objects,
        work: IsolatedWork,
        *,
        limits: Limits,
        max_upload_bytes: int,
        claim_stale_seconds: float,
    ) -> None:
        self._images = images
        self._outcomes = outcomes
        self._objects = objects
        self._work = work
        self._limits = limits
        self._max_upload_bytes = max_upload_bytes
        self._claim_stale_seconds = claim_stale_seconds
        # Claims this process could not give back (the database went away mid-job): nobody
        # else works on them, so the next delivery may take them over at once instead of
        # waiting out the stale-claim timeout meant for crashed processes.
        self._abandoned: set[str] = set()

    async def __call__(self, image_id: str, key: str) -> Result:
        record = await self._images.find_by_id(image_id)
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
        with stage("head"):
            info = await self._objects.head(key)
        if info is None:
            return await self._fail(record, key, "MISSING", stage)
        if info.size == 0:
            return await self._fail(record, key, "EMPTY", stage, size=0)
        if info.size > self._max_upload_bytes:
            return await self._fail(record, key, "TOO_LARGE", stage, size=info.size)
        try:
            with stage("download"):
                data = await self._objects.get(key, max_bytes=self._max_upload_bytes)
        except ObjectTooLarge:  # replaced by a bigger PUT after HeadObject
            return await self._fail(record, key, "TOO_LARGE", stage)
        try:
            with stage("verify"):
                job = await self._work.run(verify, data, record.content_type, self._limits)
        except (Rejected, JobKilled) as rejected:
            log.info(
                "upload rejected",
                extra={"image_id": record.id, "reason": rejected.reason, "detail": rejected.detail},
            )
            rss = getattr(rejected, "peak_rss_bytes", None)
            return await self._fail(record, key, rejected.reason, stage, size=len(data), rss=rss)
        verified: Verified = job.value
        image = VerifiedImage(
            verified.sha256, verified.format, verified.width, verified.height, verified.size_bytes
        )
        try:
            with stage("commit"):
                await self._outcomes.mark_ready(record.id, image)
        except NotProcessing:  # our claim went stale and another worker finished the record
            return Result(Outcome.DUPLICATE)
        with stage("cleanup"):
            await self._objects.delete(key)
        return Result(Outcome.READY, None, stage.ms, job.peak_rss_bytes)

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
