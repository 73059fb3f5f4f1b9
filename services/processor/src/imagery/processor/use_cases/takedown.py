"""A takedown job (`imagery-admin block`, kind 'takedown', target the bytes' SHA-256): the
command has blocked the bytes and turned their READY images BLOCKED, unlinking the content;
this deletes the content everywhere it may live and asks the CDN to forget it.

For each project's content address of the bytes: every version of the original and of every
variant (S3 versioning would otherwise keep the bytes, and the reconciler would bring an
original back from them), then the content's rows. Then CloudFront invalidations with one
wildcard per content's variant folder (the CDN serves nothing else), only for content that
existed (each wildcard is one path of the 1,000 a month CloudFront does not bill), at most
`WILDCARDS_PER_INVALIDATION` per request (CloudFront runs at most 15 wildcard paths at once).
The origin is emptied before the CDN is asked, so nothing is fetched back into it.

Resumable: what it has found and done is saved in the job's row as it goes (which also
beats its heartbeat), so a run that fails (CloudFront busy, S3 away) or a processor that dies
leaves the job to be claimed again, and the next run goes on from there: the content found
before deleting is still invalidated, and an invalidation already made is not made twice
(each has its caller reference). A job whose bytes were unblocked before it ran does nothing."""

from __future__ import annotations

import logging
from typing import Any

from imagery.common.storage_keys import GLOBAL_SCOPE, original_key, variants_prefix
from imagery.processor.ports import AdminJob, CdnInvalidator, EveryVersion, TakedownRecords

log = logging.getLogger(__name__)
WILDCARDS_PER_INVALIDATION = 15


class _TakenOver(Exception):
    """Another processor holds the job now."""


class TakedownJob:
    def __init__(
        self,
        records: TakedownRecords,
        objects: EveryVersion,
        cdn: CdnInvalidator | None,
    ) -> None:
        self._records = records
        self._objects = objects
        self._cdn = cdn

    async def __call__(self, job: AdminJob) -> None:
        state = await self._records.begin(job)
        if state is None:
            return  # someone else runs it now
        try:
            await self._run(job, dict(state))
        except _TakenOver:
            log.info("takedown taken over by another processor", extra={"job": job.id})

    async def _run(self, job: AdminJob, state: dict[str, Any]) -> None:
        addresses = await self._records.addresses(job.target)
        if "existed" not in state:  # the first run: nothing deleted yet
            if not await self._records.still_blocked(job.target):
                await self._records.finish(
                    job, {"sha256": job.target, "skipped": "unblocked before the takedown ran"}
                )
                return
            rows = await self._records.with_rows(addresses)
            state = {"sha256": job.target, "existed": sorted(rows), "object_versions_deleted": 0}
            await self._save(job, state)
        for address in addresses:
            gone = await self._objects.delete_every_version(original_key(GLOBAL_SCOPE, address))
            gone += await self._objects.delete_every_version(variants_prefix(GLOBAL_SCOPE, address))
            if gone:
                state["existed"] = sorted({*state["existed"], address})
                state["object_versions_deleted"] += gone
            await self._save(job, state)
        await self._records.forget_content(addresses)
        state["contents"] = len(state["existed"])
        if self._cdn is None:
            state["invalidation_skipped"] = "CLOUDFRONT_DISTRIBUTION_ID is not set"
        else:
            await self._invalidate(job, state, self._cdn)
        log.info(
            "content taken down",
            extra={
                "job": job.id,
                "contents": state["contents"],
                "versions": state["object_versions_deleted"],
            },
        )
        await self._records.finish(job, state)

    async def _invalidate(self, job: AdminJob, state: dict[str, Any], cdn: CdnInvalidator) -> None:
        paths = [f"/{variants_prefix(GLOBAL_SCOPE, address)}*" for address in state["existed"]]
        made: list[dict[str, Any]] = state.setdefault("invalidations", [])
        step = WILDCARDS_PER_INVALIDATION
        for number, first in enumerate(range(0, len(paths), step)):
            if number < len(made):
                continue  # made by an earlier run
            invalidation = await cdn.invalidate(
                paths[first : first + step], reference=f"imagery-takedown-{job.id}-{number}"
            )
            made.append({"id": invalidation.id, "paths": list(invalidation.paths)})
            await self._save(job, state)

    async def _save(self, job: AdminJob, state: dict[str, Any]) -> None:
        if not await self._records.save(job, state):
            raise _TakenOver
