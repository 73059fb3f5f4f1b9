"""`imagery-admin reconcile` (issue 18): the processor's own reconciler, the one its
housekeeping runs every PROCESSOR_RECONCILE_INTERVAL_SECONDS with the same grace, limits and
job sandbox, run once as an operator job with the options the operator chose. The command
holds neither the bucket access nor the sandbox that rendering needs, hence a job.

Its progress is the stored content checked, of all of it; the bucket's listing before that
beats without moving the bar. A job taken over (its processor looked dead) stops at its next
beat, and the new holder runs the whole pass again: every step of it is safe to repeat. The
result, counts and a few examples of each finding, is kept in the job's row for the command.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from imagery.processor.ports import AdminJob, ReconcileJobs, ReconcileOptions
from imagery.processor.use_cases.reconcile import Reconciler, Report

log = logging.getLogger(__name__)
EXAMPLES = 10  # of each finding, in the result


class _TakenOver(Exception):
    """Another processor holds the job now."""


class ReconcileJob:
    def __init__(
        self,
        reconciler: Reconciler,
        jobs: ReconcileJobs,
        *,
        beat_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._reconciler = reconciler
        self._jobs = jobs
        self._beat = beat_seconds
        self._clock = clock

    async def __call__(self, job: AdminJob) -> None:
        options = await self._jobs.begin(job)
        if options is None:
            return  # someone else runs it now
        checked = 0
        last_beat = self._clock()

        async def progress(contents: int) -> None:
            nonlocal checked, last_beat
            checked += contents
            if self._clock() - last_beat >= self._beat:
                last_beat = self._clock()
                if not await self._jobs.progress(job, done=checked):
                    raise _TakenOver

        try:
            report = await self._reconciler.run(
                dry_run=options.dry_run, remove_orphans=options.remove_orphans, progress=progress
            )
        except _TakenOver:
            log.info("reconcile job taken over; leaving it", extra={"job": job.id})
            return
        if not await self._jobs.progress(job, done=checked):
            return
        await self._jobs.finish(job, await self._result(report, options))
        log.info("reconcile job done", extra={"job": job.id, "dry_run": options.dry_run})

    async def _result(self, report: Report, options: ReconcileOptions) -> dict[str, Any]:
        images, examples = await self._jobs.ready_images_of(report.content_lost, limit=EXAMPLES)
        return {
            "dry_run": options.dry_run,
            "remove_orphans": options.remove_orphans,
            "grace_seconds": report.grace_seconds,
            "versioning": report.versioning,
            "orphans": _finding([*report.orphans_deleted, *report.orphans_kept]),
            "orphans_removed": _finding(report.orphans_deleted),
            "orphans_in_grace": _finding(report.orphans_in_grace),
            "originals_restored": _finding(report.originals_restored),
            "variants_rebuilt": _finding(report.variants_rebuilt),
            "content_lost": {
                **_finding(report.content_lost),
                "images": images,
                "image_examples": examples,
            },
            "originals_lost": _finding(report.originals_lost),
        }


def _finding(found: Sequence[str]) -> dict[str, Any]:
    return {"count": len(found), "examples": sorted(found)[:EXAMPLES]}
