"""Uploads the queue never finished: an event that was lost or parked in the dead-letter
queue, a claim nobody gave back, or an upload URL that was never used. Run periodically; it
goes through the same claimed path as the consumer, so it can never double-count. Each pass
claims the rows that are due (other pods' sweeps take other rows), works on up to `parallel`
of them at once, and one record's trouble never stops the rest of the pass."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from imagery.common.domain import ImageRecord, ImageStatus
from imagery.common.errors import FailureReason
from imagery.processor.ports import Images, Objects
from imagery.processor.use_cases.process_upload import Outcome, ProcessUpload

log = logging.getLogger(__name__)


class Reaper:
    def __init__(
        self,
        images: Images,
        objects: Objects,
        process: ProcessUpload,
        *,
        abandoned_after_seconds: float,
        claim_stale_seconds: float,
        parallel: int = 1,
        lease_seconds: float = 60,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._slots = asyncio.Semaphore(max(1, parallel))
        self._lease = lease_seconds
        self._clock = clock
        self._images = images
        self._objects = objects
        self._process = process
        self._abandoned_after = abandoned_after_seconds
        self._stale = claim_stale_seconds

    async def sweep(self, limit: int = 50) -> dict[str, int]:
        """One pass; returns how many records ended how."""
        counts: dict[str, int] = {}
        idle = min(self._abandoned_after, self._stale)
        due = await self._images.claim_unfinished(
            idle_seconds=idle, lease_seconds=self._lease, limit=limit
        )
        for outcome in await asyncio.gather(*(self._finish_one(record) for record in due)):
            if outcome is not None:
                counts[outcome] = counts.get(outcome, 0) + 1
        if counts:
            log.info("finished uploads the queue did not", extra={"outcomes": counts})
        return counts

    async def _finish_one(self, record: ImageRecord) -> str | None:
        async with self._slots:
            try:
                return await self._finish(record)
            except Exception as exc:  # noqa: BLE001 - the record is due again next pass
                log.warning(
                    "could not finish an upload; the next sweep tries again",
                    extra={"image_id": record.id, "error": f"{type(exc).__name__}: {exc}"},
                )
                return "error"

    async def _finish(self, record: ImageRecord) -> str | None:
        uploaded = await self._objects.head(record.object_key) is not None
        # A lost or parked event (the object is there), or a stale claim: the normal path.
        if uploaded or record.status is ImageStatus.PROCESSING:
            result = await self._process(record.id, record.object_key)
            return None if result.outcome is Outcome.BUSY else result.outcome.value
        if self._old_enough(record):  # pending, and its upload URL can no longer be used
            failed = await self._images.update_status(
                record.id,
                ImageStatus.FAILED,
                failure_reason=FailureReason.NOT_UPLOADED,
                only_from={ImageStatus.PENDING},
            )
            return "not_uploaded" if failed else None
        return None

    def _old_enough(self, record: ImageRecord) -> bool:
        created = record.created_at or self._clock()
        return (self._clock() - created).total_seconds() >= self._abandoned_after
