"""Operator jobs (`imagery-admin`) the processor runs from Postgres: one at a time per
processor, any processor, resumable. Five kinds: purging a deleted project once its retention is
over (queued automatically) or when an operator asks, a backfill of a project's content to
its current variant profile (`use_cases/backfill.py`), a reprocess of one failed upload
(`imagery-admin reprocess`): its retained bytes copied back to `uploads/`, whose S3 event
brings the record, set back to `pending` by the command, through the normal processing, and
a reconcile of the bucket against the database (`use_cases/reconcile_job.py`), and the
deletion and invalidation of blocked content (`use_cases/takedown.py`).
The processor does the copy because it holds the bucket access the command does not."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from imagery.common.storage_keys import GLOBAL_SCOPE, retained_key
from imagery.common.tenancy import Actor
from imagery.processor.ports import AdminJob, AdminJobs, Objects

log = logging.getLogger(__name__)
PURGE_BATCH = 500
SYSTEM = Actor("system:processor")


class RunAdminJobs:
    """One pass: queue due purges, then claim and run jobs until none is left."""

    def __init__(
        self,
        jobs: AdminJobs,
        objects: Objects,
        *,
        stale_after_seconds: float = 300,
        batch: int = PURGE_BATCH,
        backfill: Callable[[AdminJob], Awaitable[None]] | None = None,
        reconcile: Callable[[AdminJob], Awaitable[None]] | None = None,
        takedown: Callable[[AdminJob], Awaitable[None]] | None = None,
    ) -> None:
        self._jobs = jobs
        self._backfill = backfill
        self._reconcile = reconcile
        self._takedown = takedown
        self._objects = objects
        self._stale_after = stale_after_seconds
        self._batch = batch

    async def __call__(self) -> int:
        await self._jobs.enqueue_due_purges()
        ran = 0
        while (job := await self._jobs.claim(stale_after_seconds=self._stale_after)) is not None:
            ran += 1
            try:
                await self._run(job)
            except Exception as exc:
                log.warning("admin job failed", extra={"job": job.id, "error": str(exc)})
                raise  # left running: claimed again once its heartbeat is stale
        return ran

    async def _run(self, job: AdminJob) -> None:
        if job.kind == "purge_project":
            await self._purge(job)
        elif job.kind == "reprocess":
            await self._reprocess(job)
        elif job.kind == "backfill" and self._backfill is not None:
            await self._backfill(job)
        elif job.kind == "reconcile" and self._reconcile is not None:
            await self._reconcile(job)
        elif job.kind == "takedown" and self._takedown is not None:
            await self._takedown(job)
        else:
            await self._jobs.finish(job, error=f"unknown job kind {job.kind!r}")

    async def _reprocess(self, job: AdminJob) -> None:
        """Safe to run again: a copy of the same bytes makes one more event, which finds the
        record claimed or ended and changes nothing."""
        target = await self._jobs.reprocess_target(job.target)
        if target is None:
            await self._jobs.finish(job)  # ended or deleted meanwhile: nothing left to do
            return
        upload, content_type = target
        copied = await self._objects.copy(
            retained_key(GLOBAL_SCOPE, job.target), upload, content_type=content_type
        )
        if copied is None:
            await self._jobs.reprocess_lost(job.target)
            await self._jobs.finish(
                job,
                error=f"the retained bytes of image {job.target} are gone (expired or deleted), "
                "so it ended FAILED with NOT_UPLOADED: it can only be uploaded again",
            )
            return
        log.info("reprocess started", extra={"image_id": job.target})
        await self._jobs.finish(job)

    async def _purge(self, job: AdminJob) -> None:
        total = await self._jobs.project_images(job.target)
        if not await self._jobs.progress(job, done=0, total=total):
            return
        while purged := await self._jobs.purge_images(job.target, self._batch):
            for image in purged:
                if not image.terminal:  # bytes may still sit in uploads/
                    await self._objects.delete(image.object_key)
            if not await self._jobs.progress(job, done=len(purged)):
                return  # someone else took the job over
        outcome = await self._jobs.forget_project(job.target, SYSTEM)
        if outcome == "purged":
            log.info("project purged", extra={"project": job.target})
            await self._jobs.finish(job)
        elif outcome == "restored":
            await self._jobs.finish(job, error="the project was restored before its purge ended")
        # "not empty": an upload raced the last batch; claimed again once the heartbeat is stale
