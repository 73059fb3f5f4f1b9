"""Small fakes behind the ports, for unit tests. The conformance tests in
tests/integration/test_repository.py hold them to the same behaviour as the real adapters."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from imagery.common.aws.s3 import ObjectTooLarge
from imagery.common.db.images import ImageAlreadyExists
from imagery.common.db.outcomes import LinkResult, NotProcessing, VerifiedImage
from imagery.common.domain import (
    DeletedImage,
    DownloadTarget,
    ImageRecord,
    ImageStatus,
    VariantInfo,
)
from imagery.common.ports import ObjectInfo, PresignedUpload
from imagery.processor.isolation import JobResult


class FakeClock:
    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class InMemoryImageRepository:
    def __init__(self, clock: FakeClock | None = None) -> None:
        self.records: dict[str, ImageRecord] = {}
        self.clock = clock or FakeClock()
        self.queries = 0
        self.blob_counts: dict[str, int] | None = None  # shared with FakeOutcomes.blobs when wired
        self.deletion_log: list[str] = []  # the feed; a position in it plays the xid

    async def save(self, record: ImageRecord) -> None:
        if record.id in self.records:
            raise ImageAlreadyExists(f"Image {record.id} already exists.")
        now = self.clock()
        self.records[record.id] = dataclasses.replace(record, created_at=now, updated_at=now)

    async def delete(self, image_id: str) -> DeletedImage | None:
        record = self.records.pop(image_id, None)
        if record is None:
            return None
        self.deletion_log.append(image_id)
        unreferenced = False
        if record.sha256 is not None and self.blob_counts is not None:
            self.blob_counts[record.sha256] -= 1
            unreferenced = self.blob_counts[record.sha256] == 0
        return DeletedImage(
            record.id, record.status, record.object_key, record.sha256, unreferenced
        )

    async def deletion_horizon(self) -> int:
        return len(self.deletion_log)

    async def deletions_since(self, horizon: int) -> tuple[int, list[str]]:
        return len(self.deletion_log), self.deletion_log[horizon:]

    async def find_by_id(self, image_id: str) -> ImageRecord | None:
        self.queries += 1
        return self.records.get(image_id)

    async def find_by_ids(self, image_ids: Sequence[str]) -> list[ImageRecord]:
        self.queries += 1
        return [self.records[i] for i in dict.fromkeys(image_ids) if i in self.records]

    async def find_download_targets(
        self, image_ids: Sequence[str], preset: str, formats: Sequence[str]
    ) -> list[DownloadTarget]:
        self.queries += 1
        targets = []
        for record in (self.records[i] for i in dict.fromkeys(image_ids) if i in self.records):
            ready = record.status is ImageStatus.READY
            matches = [
                v
                for f in formats
                for v in record.variants
                if ready and (v.name, v.format) == (preset, f)
            ]
            first = matches[0] if matches else None
            if first is None:
                targets.append(DownloadTarget(record.id, record.status, None, None))
            else:
                targets.append(
                    DownloadTarget(
                        record.id, record.status, first.key, first.content_type, first.format
                    )
                )
        return targets

    async def update_status(
        self,
        image_id: str,
        status: ImageStatus,
        *,
        size_bytes: int | None = None,
        failure_reason: str | None = None,
        only_from: Collection[ImageStatus] | None = None,
    ) -> bool:
        record = self.records.get(image_id)
        if record is None or (only_from is not None and record.status not in only_from):
            return False
        self.clock.advance(0.001)
        self.records[image_id] = dataclasses.replace(
            record,
            status=status,
            size_bytes=record.size_bytes if size_bytes is None else size_bytes,
            failure_reason=failure_reason,
            updated_at=self.clock(),
        )
        return True

    async def find_unfinished(self, *, idle_seconds: float, limit: int = 100) -> list[ImageRecord]:
        cutoff = self.clock() - timedelta(seconds=idle_seconds)
        unfinished = [
            r
            for r in self.records.values()
            if not r.status.terminal and r.updated_at is not None and r.updated_at <= cutoff
        ]
        return sorted(unfinished, key=lambda r: r.updated_at or cutoff)[:limit]

    async def claim_for_processing(
        self, image_id: str, *, stale_after_seconds: float
    ) -> ImageRecord | None:
        record = self.records.get(image_id)
        if record is None or record.updated_at is None:
            return None
        stale = record.updated_at <= self.clock() - timedelta(seconds=stale_after_seconds)
        if record.status is ImageStatus.PENDING or (
            record.status is ImageStatus.PROCESSING and stale
        ):
            await self.update_status(image_id, ImageStatus.PROCESSING)
            return self.records[image_id]
        return None


class FakeSigner:
    def __init__(self, fail: Exception | None = None) -> None:
        self.signed: list[tuple[str, str, int]] = []
        self.fail = fail

    async def presign_put(
        self, key: str, content_type: str, expires_in_seconds: int
    ) -> PresignedUpload:
        if self.fail is not None:
            raise self.fail
        self.signed.append((key, content_type, expires_in_seconds))
        return PresignedUpload(
            url=f"https://s3.example/{key}?X-Amz-SignedHeaders=content-type%3Bhost",
            method="PUT",
            headers={"Content-Type": content_type},
            expires_in_seconds=expires_in_seconds,
        )


class FakeObjects:
    """An in-memory bucket that records what was read."""

    def __init__(self) -> None:
        self.objects: dict[str, tuple[bytes, str]] = {}
        self.cache_control: dict[str, str | None] = {}
        self.reads: list[str] = []
        self.fail_reads: Exception | None = None
        self.bytes_read = 0
        self.copies: list[tuple[str, str]] = []
        self.before_copy: Callable[[str], None] | None = None  # e.g. a client's late re-PUT

    async def head(self, key: str) -> ObjectInfo | None:
        if key not in self.objects:
            return None
        body, content_type = self.objects[key]
        return ObjectInfo(key, len(body), content_type, None)

    async def get(self, key: str, *, max_bytes: int) -> bytes | None:
        if self.fail_reads is not None:
            raise self.fail_reads
        self.reads.append(key)
        if key not in self.objects:
            return None
        body = self.objects[key][0]
        self.bytes_read += min(len(body), max_bytes + 1)  # what a ranged GET transfers
        if len(body) > max_bytes:
            raise ObjectTooLarge(f"Object {key} is larger than {max_bytes} bytes.", size=len(body))
        return body

    async def put(
        self, key: str, body: bytes, *, content_type: str, cache_control: str | None = None
    ) -> None:
        self.objects[key] = (body, content_type)
        self.cache_control[key] = cache_control

    async def copy(self, source_key: str, key: str, *, content_type: str) -> str | None:
        if self.before_copy is not None:
            self.before_copy(source_key)
        if source_key not in self.objects:
            return None
        body = self.objects[source_key][0]
        self.objects[key] = (body, content_type)
        self.cache_control[key] = None
        self.copies.append((source_key, key))
        return base64.b64encode(hashlib.sha256(body).digest()).decode()

    async def delete(self, key: str) -> None:
        self.objects.pop(key, None)


class FakeOutcomes:
    """The processor's writes against the in-memory repository."""

    def __init__(self, images: InMemoryImageRepository) -> None:
        self.images = images
        self.blobs: dict[str, int] = {}
        self.formats: dict[str, VerifiedImage] = {}
        images.blob_counts = self.blobs

    async def link_existing(self, image_id: str, sha256: str, declared_format: str) -> LinkResult:
        self._require_processing(image_id)
        if self.blobs.get(sha256, 0) == 0:
            return LinkResult(linked=False)
        image = self.formats[sha256]
        if image.format != declared_format:
            return LinkResult(linked=False, mismatch=image.format)
        self.blobs[sha256] += 1
        self._ready(image_id, image)
        return LinkResult(linked=True, image=image)

    async def mark_ready(
        self,
        image_id: str,
        image: VerifiedImage,
        variants: Sequence[VariantInfo] = (),
        write_objects: Callable[[], Awaitable[None]] | None = None,
    ) -> bool:
        self._require_processing(image_id)
        fresh = self.blobs.get(image.sha256, 0) == 0
        if fresh and write_objects is not None:
            await write_objects()
        self.blobs[image.sha256] = self.blobs.get(image.sha256, 0) + 1
        self.formats[image.sha256] = image
        self._ready(image_id, image)
        return fresh

    def _require_processing(self, image_id: str) -> None:
        record = self.images.records.get(image_id)
        if record is None or record.status is not ImageStatus.PROCESSING:
            raise NotProcessing(image_id)

    def _ready(self, image_id: str, image: VerifiedImage) -> None:
        self.images.records[image_id] = dataclasses.replace(
            self.images.records[image_id],
            status=ImageStatus.READY,
            sha256=image.sha256,
            size_bytes=image.size_bytes,
            width=image.width,
            height=image.height,
            detected_format=image.format,
        )

    async def mark_failed(
        self,
        image_id: str,
        reason: str,
        *,
        size_bytes: int | None = None,
        detected_format: str | None = None,
    ) -> bool:
        return await self.images.update_status(
            image_id,
            ImageStatus.FAILED,
            size_bytes=size_bytes,
            failure_reason=reason,
            only_from={ImageStatus.PROCESSING},
        )

    async def release_claim(self, image_id: str) -> None:
        await self.images.update_status(
            image_id, ImageStatus.PENDING, only_from={ImageStatus.PROCESSING}
        )


class InlineWork:
    """Runs isolated work in-process (unit tests only; the real runner forks a limited child)."""

    def __init__(self) -> None:
        self.calls = 0

    async def run(self, fn: Callable[..., Any], *args: Any) -> JobResult:
        self.calls += 1
        return JobResult(fn(*args), 0)
