"""Backfill (issue 17): bring one project's content to its current profile version, as an
operator job (`imagery-admin backfill`).

The job walks the project's content below the version in address order, a batch at a time,
and asks for each at-ingest preset the version has no variant of yet (`render_requests`,
source "backfill"); the renderer makes them, lazy asks first, and moves each content to the
version once it has them all. Content with nothing missing is moved at once. Asks are made at
most `per_minute` a minute (and never far ahead of the renderer), so a backfill never crowds
out lazy renders, and the renderer's own concurrency keeps it from uploads' job slots.

Resumable: the job keeps its place in its row, so a job taken over after its processor died
goes on from there (asking twice for a render is a no-op). A job that starts again after the
profile changed walks from the start towards the new version. Older versions' variants stay
and serve until their replacements exist; they are not deleted here. Progress: the project's
content at the version, of all its content. The job ends once every ask it made is answered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from imagery.common.presets import Preset
from imagery.common.profiles import VariantProfile, default_profile
from imagery.processor.ports import AdminJob, AdminJobs
from imagery.processor.render_ports import Backfills

log = logging.getLogger(__name__)
BATCH = 100  # contents per batch at most


class Backfill:
    def __init__(
        self,
        backfills: Backfills,
        jobs: AdminJobs,
        default_presets: Sequence[Preset],
        *,
        per_minute: int,
        batch: int = BATCH,
        poll_seconds: float = 2.0,
        beat_seconds: float = 15.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._backfills = backfills
        self._jobs = jobs
        self._default = default_profile(default_presets)
        self._per_minute = max(1, per_minute)
        self._batch = batch
        self._poll = poll_seconds
        self._beat = beat_seconds
        self._sleep = sleep
        # Ten seconds' worth of asks: one batch at most, and twice that waiting at most.
        self._chunk = max(1, self._per_minute // 6)

    async def __call__(self, job: AdminJob) -> None:
        live, chosen = await self._backfills.current_profile(job)
        if not live:
            await self._jobs.finish(job, error="the project is gone or deleted")
            return
        profile = chosen or self._default
        after = await self._backfills.begin(job, profile.version)
        if after is None or not await self._backfills.progress(job, profile):
            return  # someone else runs it now
        if not await self._walk(job, profile, after):
            return
        while await self._backfills.pending(job):
            if not await self._rest(job, profile, self._poll):
                return
        await self._backfills.progress(job, profile)
        log.info(
            "backfill done",
            extra={"job": job.id, "project": job.target, "profile_version": profile.version},
        )
        await self._jobs.finish(job)

    async def _walk(self, job: AdminJob, profile: VariantProfile, after: str) -> bool:
        """Ask for every missing render, paced; False when the job stopped being ours."""
        presets = profile.at_ingest
        limit = max(1, min(self._batch, self._chunk // max(1, len(presets))))
        while True:
            while await self._backfills.pending(job) >= 2 * self._chunk:  # the renderer lags
                if not await self._rest(job, profile, self._poll):
                    return False
            batch = await self._backfills.enqueue(
                job, version=profile.version, after=after, limit=limit, presets=presets
            )
            if batch is None:
                return False
            if batch.contents < limit:
                return True
            after = batch.last
            if not await self._rest(job, profile, batch.renders * 60 / self._per_minute):
                return False

    async def _rest(self, job: AdminJob, profile: VariantProfile, seconds: float) -> bool:
        """Wait `seconds`, beating (with the progress) at least every `beat_seconds`."""
        while seconds > 0:
            step = min(seconds, self._beat)
            await self._sleep(step)
            seconds -= step
            if not await self._backfills.progress(job, profile):
                return False
        return True
