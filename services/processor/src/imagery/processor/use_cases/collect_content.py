"""Deleting content nobody refers to any more. The last reference's deletion leaves the
content's row behind as a tombstone; after a grace period a collector claims it (from then on
nothing links to or revives it), deletes its objects outside any transaction, then the row.
An upload of the same content within the grace period revives the tombstone and keeps the
objects; one that meets a claimed row waits until the collection is over. An object deletion
that fails leaves the claim for a later sweep to take over, so nothing is forgotten."""

from __future__ import annotations

import logging

from imagery.common.errors import DependencyUnavailable
from imagery.processor.ports import ContentStore, Objects, UnreferencedContent

log = logging.getLogger(__name__)


class ContentCollector:
    def __init__(self, content: ContentStore, objects: Objects, *, grace_seconds: float) -> None:
        self._content = content
        self._objects = objects
        self._grace = grace_seconds

    async def sweep(self, limit: int = 100) -> int:
        """One pass over content unreferenced for the grace period; returns how many went."""
        collected = 0
        for content in await self._content.claim_unreferenced(
            grace_seconds=self._grace, limit=limit
        ):
            try:
                collected += await self._collect(content)
            except DependencyUnavailable as exc:
                log.warning(
                    "could not delete unreferenced content; will retry",
                    extra={"sha256": content.sha256, "error": str(exc)},
                )
        return collected

    async def _collect(self, content: UnreferencedContent) -> bool:
        for key in content.keys:
            await self._objects.delete(key)
        forgotten = await self._content.forget(content)
        if forgotten:
            log.info(
                "unreferenced content deleted",
                extra={"sha256": content.sha256, "objects": len(content.keys)},
            )
        return forgotten
