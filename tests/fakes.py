"""Small fakes behind the ports, for unit tests. The conformance tests in
tests/integration/test_repository.py hold them to the same behaviour as the real adapters."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta

from imagery.common.db.images import ImageAlreadyExists
from imagery.common.domain import DownloadTarget, ImageRecord, ImageStatus
from imagery.common.ports import PresignedUpload


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

    async def save(self, record: ImageRecord) -> None:
        if record.id in self.records:
            raise ImageAlreadyExists(f"Image {record.id} already exists.")
        now = self.clock()
        self.records[record.id] = dataclasses.replace(record, created_at=now, updated_at=now)

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

    async def claim_for_processing(
        self, image_id: str, *, stale_after_seconds: float
    ) -> ImageRecord | None:
        record = self.records.get(image_id)
        if record is None or record.updated_at is None:
            return None
        stale = record.updated_at < self.clock() - timedelta(seconds=stale_after_seconds)
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
