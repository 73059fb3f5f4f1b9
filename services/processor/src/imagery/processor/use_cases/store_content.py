"""Content, keyed by its SHA-256: linking an upload to content already stored, and storing
new content. No transaction is ever held across an S3 call.

New content is written in three steps: a short unit of work reserves the content's row (with
its variants, unreferenced, so a write that never completes is collected like any other), the
objects are written, then one unit of work references the content and marks the record
ready. The reference names the reservation, so it never completes a row that a collector
took and someone else reserved again in between.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Iterator

from opentelemetry import metrics

from imagery.common.domain import ImageRecord, VariantInfo
from imagery.common.formats import content_type_of, declares
from imagery.common.storage_keys import (
    GLOBAL_SCOPE,
    VARIANT_CACHE_CONTROL,
    original_key,
    variant_key,
)
from imagery.processor.imaging import Processed, Rendered, Verified
from imagery.processor.ports import LinkResult, Objects, Outcomes, VerifiedImage

log = logging.getLogger(__name__)
_OVER_BUDGET = metrics.get_meter(__name__).create_counter(
    "imagery.processor.variants.over_budget",
    description="Variants stored over their preset's byte budget, by preset and format",
)


class ContentBusy(Exception):
    """The same content is being collected right now: process the upload again later."""


class _Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ContentBlocked(Exception):
    """The bytes were taken down (`imagery-admin block`) before the image could turn READY."""


class NotProcessing(Exception):
    """The record stopped being `processing` (another worker finished it, or it was deleted)."""


class Stages:
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


class ContentWriter:
    def __init__(self, outcomes: Outcomes, objects: Objects) -> None:
        self._outcomes = outcomes
        self._objects = objects

    async def link(
        self,
        record: ImageRecord,
        sha256: str,
        declared: str,
        stage: Stages,
        digest: str,
        refuse: Callable[[int, int], str | None] = lambda _w, _h: None,
    ) -> LinkResult:
        """Known content whose objects are all there: the record is READY on it, nothing
        re-verified, re-rendered or re-stored. Known content with objects missing (a lifecycle
        rule, a hand deletion, a local S3 that started empty) is not linked: storing these
        bytes as new content writes its objects again. Raises ContentBusy while the content
        is being collected."""
        with stage("check"):
            keys = await self._outcomes.stored_keys(sha256)
            found = await asyncio.gather(*(self._objects.head(k) for k in keys or ()))
        if keys and not all(found):
            log.warning(
                "known content has lost objects: rebuilding them from this upload",
                extra={"sha256": sha256, "missing": sum(1 for f in found if f is None)},
            )
            return LinkResult(linked=False)
        with stage("commit"):
            try:
                async with self._outcomes.unit_of_work() as uow:
                    if not await uow.lock_processing(record.id):
                        raise NotProcessing
                    if await uow.content_blocked(digest):
                        raise ContentBlocked
                    linked = await uow.link_stored_content(sha256, declared)
                    if linked.mismatch and declares(record.content_type, linked.mismatch):
                        # image/heif also names HEVC-coded (heic) content
                        linked = await uow.link_stored_content(sha256, linked.mismatch)
                    if linked.linked and linked.image is not None:
                        image = dataclasses.replace(linked.image, digest=digest)
                        refused = refuse(image.width, image.height)
                        if refused is not None:  # the project's own limits: undo the link
                            raise _Refused(refused)
                        linked = dataclasses.replace(linked, image=image)
                        await uow.mark_ready(record.id, image)
            except _Refused as refused:
                return LinkResult(linked=False, refused=refused.reason)
        if linked.collecting:
            raise ContentBusy
        return linked

    async def store(
        self,
        record: ImageRecord,
        key: str,
        data: bytes,
        processed: Processed,
        stage: Stages,
        address: str,
        version: int = 0,
    ) -> VerifiedImage:
        """Reserve, write the objects, then reference the content and mark the record READY.
        `address` is where the content lives (its SHA-256, scoped to the project); `version`
        is the variant profile version `processed` was rendered for."""
        verified = processed.verified
        image = VerifiedImage(
            address,
            verified.format,
            verified.width,
            verified.height,
            verified.size_bytes,
            digest=verified.sha256,
            profile_version=version,
            insights=processed.insights,
        )
        variants = [_variant_info(address, v, version) for v in processed.variants]
        with stage("reserve"):
            async with self._outcomes.unit_of_work() as uow:
                reservation = await uow.reserve_content(image, variants)
        if reservation is None:
            raise ContentBusy
        with stage("store"):
            await self._write(key, data, verified, address, variants, processed)
        with stage("commit"):
            async with self._outcomes.unit_of_work() as uow:
                if not await uow.lock_processing(record.id):
                    raise NotProcessing
                if await uow.content_blocked(verified.sha256):
                    raise ContentBlocked  # its objects go with the unreferenced reservation
                if not await uow.reference_content(image.sha256, reservation):
                    raise ContentBusy  # the reservation lapsed: its objects may be gone
                await uow.mark_ready(record.id, image)
        note_over_budget(address, processed.variants)
        return image

    async def _write(
        self,
        key: str,
        data: bytes,
        verified: Verified,
        address: str,
        variants: list[VariantInfo],
        processed: Processed,
    ) -> None:
        """Original and variants, all at once."""
        await asyncio.gather(
            self._write_original(key, data, verified, address),
            *(
                self._objects.put(
                    info.key,
                    v.body,
                    content_type=v.content_type,
                    cache_control=VARIANT_CACHE_CONTROL,
                )
                for info, v in zip(variants, processed.variants, strict=True)
            ),
        )

    async def _write_original(
        self, key: str, data: bytes, verified: Verified, address: str
    ) -> None:
        """The upload object copied in place by S3 (the bytes are not sent again), kept only if
        S3's own SHA-256 of the copy is the verified one: a client that re-PUT its upload URL
        after we read it gets our verified bytes written over the copy instead."""
        target = original_key(GLOBAL_SCOPE, address)
        content_type = content_type_of(verified.format)
        copied = await self._objects.copy(key, target, content_type=content_type)
        if copied != base64.b64encode(bytes.fromhex(verified.sha256)).decode():
            log.info(
                "the upload changed or went after it was read: storing the verified bytes",
                extra={"key": key},
            )
            await self._objects.put(target, data, content_type=content_type)


def _variant_info(sha256: str, rendered: Rendered, version: int) -> VariantInfo:
    return VariantInfo(
        rendered.name,
        rendered.format,
        rendered.content_type,
        rendered.width,
        rendered.height,
        len(rendered.body),
        variant_key(GLOBAL_SCOPE, sha256, rendered.name, rendered.format, version),
        version,
        over_budget=rendered.over_budget,
    )


def note_over_budget(sha256: str, stored: Iterable[Rendered]) -> None:
    """Counts and logs, one line each, the stored variants that are over their byte budget:
    even the preset's quality floor did not fit."""
    for variant in stored:
        if not variant.over_budget:
            continue
        _OVER_BUDGET.add(1, {"preset": variant.name, "format": variant.format})
        log.warning(
            "variant over its byte budget at the quality floor",
            extra={
                "sha256": sha256,
                "preset": variant.name,
                "format": variant.format,
                "bytes": len(variant.body),
                "budget": variant.max_bytes,
            },
        )
