"""Deleting content nobody refers to any more. The last reference's deletion leaves the
content's row behind as a tombstone; after a grace period a collector claims it (from then on
nothing links to, reserves or revives it), deletes its objects outside any transaction, then
the row. A reservation whose objects were never referenced (its writer died, or its commit
failed) is collected the same way once its lease is over, so no object is left without a row.

An upload of the same content within the grace period revives the tombstone and keeps the
objects; one that meets a claimed row waits until the collection is over. A claim lives for
`CLAIM_LIFETIME_SECONDS`: a collector that died holding one is taken over after that, and a
live collector checks its claim before each content's deletions and gives it up when half of
that lifetime is gone, so two collectors never delete for the same claim. An object deletion
that fails leaves the claim for a later sweep to take over, so nothing is forgotten."""

from __future__ import annotations

import logging

from imagery.common.errors import DependencyUnavailable
from imagery.processor.ports import ContentStore, Objects, UnreferencedContent

log = logging.getLogger(__name__)

CLAIM_LIFETIME_SECONDS = 300.0
RESERVATION_LEASE_SECONDS = 3600.0  # far longer than writing one content's objects takes
BATCH = 10


class ContentCollector:
    def __init__(
        self,
        content: ContentStore,
        objects: Objects,
        *,
        grace_seconds: float,
        reservation_lease_seconds: float = RESERVATION_LEASE_SECONDS,
        claim_lifetime_seconds: float = CLAIM_LIFETIME_SECONDS,
    ) -> None:
        self._content = content
        self._objects = objects
        self._grace = grace_seconds
        self._lease = reservation_lease_seconds
        self._lifetime = claim_lifetime_seconds

    async def sweep(self, limit: int = 100) -> int:
        """Claim and collect due content in small batches; returns how much went."""
        collected = 0
        while limit > 0:
            claimed = await self._content.claim_unreferenced(
                grace_seconds=self._grace,
                reservation_lease_seconds=self._lease,
                claim_lifetime_seconds=self._lifetime,
                limit=min(BATCH, limit),
            )
            for content in claimed:
                try:
                    collected += await self._collect(content)
                except DependencyUnavailable as exc:
                    log.warning(
                        "could not delete unreferenced content; will retry",
                        extra={"sha256": content.sha256, "error": str(exc)},
                    )
            if len(claimed) < BATCH:
                return collected
            limit -= len(claimed)
        return collected

    async def _collect(self, content: UnreferencedContent) -> bool:
        if not await self._content.still_claimed(content, within_seconds=self._lifetime / 2):
            log.info("a collection claim ran out; leaving it", extra={"sha256": content.sha256})
            return False
        for key in content.keys:
            await self._objects.delete(key)
        forgotten = await self._content.forget(content)
        if forgotten:
            log.info(
                "unreferenced content deleted",
                extra={"sha256": content.sha256, "objects": len(content.keys)},
            )
        return forgotten
