"""A takedown job (`imagery-admin block`, kind 'takedown', target the bytes' SHA-256): the
command has blocked the bytes and turned their READY images BLOCKED, unlinking the content;
this deletes the content everywhere it may live and asks the CDN to forget it.

For each project's content address of the bytes: every version of the original and of every
variant (S3 versioning would otherwise keep the bytes, and the reconciler would bring an
original back from them), then the content's rows. Then one CloudFront invalidation with one
wildcard per content's variant folder (the CDN serves nothing else), only for content that
existed: each wildcard is one path of the 1,000 a month CloudFront does not bill.
Safe to run again: what is gone stays gone, and the same job asks for the same invalidation
(its id is the caller reference)."""

from __future__ import annotations

import logging
from typing import Any

from imagery.common.storage_keys import GLOBAL_SCOPE, original_key, variants_prefix
from imagery.processor.ports import AdminJob, CdnInvalidator, EveryVersion, TakedownRecords

log = logging.getLogger(__name__)


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
        if not await self._records.begin(job):
            return
        addresses = await self._records.addresses(job.target)
        existed: set[str] = set()
        versions = 0
        for address in addresses:
            gone = await self._objects.delete_every_version(original_key(GLOBAL_SCOPE, address))
            gone += await self._objects.delete_every_version(variants_prefix(GLOBAL_SCOPE, address))
            if gone:
                existed.add(address)
            versions += gone
        existed.update(await self._records.forget_content(addresses))
        result: dict[str, Any] = {
            "sha256": job.target,
            "contents": len(existed),
            "object_versions_deleted": versions,
            "invalidation": None,
        }
        # Only variants are served through the CDN (originals are not readable through it).
        paths = [f"/{variants_prefix(GLOBAL_SCOPE, address)}*" for address in sorted(existed)]
        if self._cdn is None:
            result["invalidation_skipped"] = "CLOUDFRONT_DISTRIBUTION_ID is not set"
        elif paths:
            invalidation = await self._cdn.invalidate(paths, reference=f"imagery-takedown-{job.id}")
            result["invalidation"] = {"id": invalidation.id, "paths": list(invalidation.paths)}
        log.info(
            "content taken down",
            extra={"job": job.id, "contents": len(existed), "versions": versions},
        )
        await self._records.finish(job, result)
