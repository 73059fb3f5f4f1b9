"""Small fakes behind the ports, for unit tests. The conformance tests in
tests/integration/test_repository.py and test_outcomes.py hold them to the same behaviour as
the real adapters."""

from __future__ import annotations

import base64
import contextlib
import copy
import dataclasses
import hashlib
import uuid
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta

from imagery.common.domain import (
    DeletedImage,
    DownloadTarget,
    ImageRecord,
    ImageStatus,
    VariantInfo,
)
from imagery.common.errors import ImageAlreadyExists
from imagery.common.ids import new_image_id
from imagery.common.quotas import UNLIMITED, Quotas, refusal
from imagery.common.request_ids import REQUEST_ID_RETENTION_SECONDS, UsedRequestId
from imagery.common.storage_keys import GLOBAL_SCOPE, original_key, upload_key
from imagery.common.tenancy import Usage
from imagery.processor.adapters.render import verify_and_render
from imagery.processor.imaging import Limits, RenderSpec
from imagery.processor.ports import (
    JobResult,
    LinkResult,
    ObjectInfo,
    ObjectTooLarge,
    UnreferencedContent,
    VerifiedImage,
)
from imagery.upload.ports import PresignedUpload


def pending_record(reserved_bytes: int = 0) -> ImageRecord:
    """A new upload's record, as CreateUploadUrl makes it, reserving `reserved_bytes`."""
    image_id = new_image_id()
    return ImageRecord(
        image_id,
        ImageStatus.PENDING,
        "image/png",
        "a.png",
        upload_key(GLOBAL_SCOPE, image_id),
        reserved_bytes=reserved_bytes,
    )


class FakeClock:
    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclasses.dataclass
class FakeBlob:
    image: VerifiedImage
    variants: tuple[VariantInfo, ...]
    updated_at: datetime
    references: int = 0
    stored: bool = False
    collecting_since: datetime | None = None
    reservation: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)


class InMemoryImageRepository:
    def __init__(self, clock: FakeClock | None = None) -> None:
        self.records: dict[str, ImageRecord] = {}
        self.clock = clock or FakeClock()
        self.queries = 0
        self.blobs: dict[str, FakeBlob] = {}  # the content table, shared with FakeOutcomes
        self.deletion_log: list[str] = []  # the feed; a position in it plays the xid
        self.swept: dict[str, datetime] = {}  # when the sweep last took a record
        self.blocked: set[str] = set()  # SHA-256s taken down (blocked_content)

    async def save(
        self, record: ImageRecord, *, principal: str = "key:test", quotas: Quotas = UNLIMITED
    ) -> None:
        if record.id in self.records:
            raise ImageAlreadyExists(f"Image {record.id} already exists.")
        now = self.clock()
        refused = refusal(
            self.usage_of(record.project_id), record.project_id, quotas, record.reserved_bytes
        )
        if refused is not None:
            raise refused
        self.records[record.id] = dataclasses.replace(record, created_at=now, updated_at=now)

    def usage_of(self, project_id: str) -> Usage:
        """As Postgres' triggers count it (migration 0012)."""
        today = self.clock().date()
        mine = [r for r in self.records.values() if r.project_id == project_id]
        kept = [r for r in mine if r.status is not ImageStatus.FAILED]
        return Usage(
            images=len(kept),
            bytes=sum(
                (r.size_bytes or 0) if r.status is ImageStatus.READY else r.reserved_bytes
                for r in kept
            ),
            uploads_today=sum(1 for r in mine if r.created_at and r.created_at.date() == today),
        )

    async def delete(
        self, project_id: str, image_id: str, *, principal: str
    ) -> DeletedImage | None:
        record = self.records.get(image_id)
        if record is None or record.project_id != project_id:
            return None
        del self.records[image_id]
        self.deletion_log.append(image_id)
        blob = self.blobs.get(record.content) if record.content is not None else None
        if blob is not None:
            if blob.references <= 0:
                raise ValueError("reference_count would go below 0")  # Postgres' CHECK
            blob.references -= 1
            blob.updated_at = self.clock()
        return DeletedImage(record.id, record.status, record.object_key, record.content)

    async def find_by_id(self, project_id: str, image_id: str) -> ImageRecord | None:
        self.queries += 1
        record = self.records.get(image_id)
        return record if record is not None and record.project_id == project_id else None

    async def find_many(self, project_id: str, image_ids: Sequence[str]) -> list[ImageRecord]:
        self.queries += 1
        wanted = set(image_ids)
        return [r for r in self.records.values() if r.id in wanted and r.project_id == project_id]

    async def find_for_processing(self, image_id: str) -> ImageRecord | None:
        self.queries += 1
        return self.records.get(image_id)

    async def update_labels(
        self, project_id: str, image_id: str, labels: Mapping[str, str], *, principal: str
    ) -> ImageRecord | None:
        record = self.records.get(image_id)
        if record is None or record.project_id != project_id:
            return None
        self.clock.advance(0.001)
        self.records[image_id] = dataclasses.replace(
            record, labels=dict(labels), updated_at=self.clock()
        )
        return self.records[image_id]

    async def find_download_targets(
        self, project_id: str, image_ids: Sequence[str], preset: str, formats: Sequence[str]
    ) -> list[DownloadTarget]:
        self.queries += 1
        targets = []
        mine = {i: r for i, r in self.records.items() if r.project_id == project_id}
        for record in (mine[i] for i in dict.fromkeys(image_ids) if i in mine):
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

    async def claim_unfinished(
        self, *, idle_seconds: float, lease_seconds: float, limit: int = 100
    ) -> list[ImageRecord]:
        cutoff = self.clock() - timedelta(seconds=idle_seconds)
        lease = self.clock() - timedelta(seconds=lease_seconds)
        unfinished = [
            r
            for r in self.records.values()
            if not r.status.terminal
            and r.updated_at is not None
            and r.updated_at <= cutoff
            and self.swept.get(r.id, lease) <= lease
        ]
        due = sorted(unfinished, key=lambda r: r.updated_at or cutoff)[:limit]
        for record in due:
            self.swept[record.id] = self.clock()
        return due

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
            if record.status is ImageStatus.PROCESSING:  # its processor died with the job
                self.records[image_id] = dataclasses.replace(
                    record, attempts=max(0, record.attempts - 1)
                )
            await self.update_status(image_id, ImageStatus.PROCESSING)
            return self.records[image_id]
        return None


class FakeUploadRequests:
    """Request ids beside the in-memory records, kept for the retention by their clock."""

    def __init__(self, images: InMemoryImageRepository) -> None:
        self.images = images
        self.kept: dict[tuple[str, str], tuple[UsedRequestId, datetime]] = {}

    async def save_once(
        self,
        record: ImageRecord,
        request_id: str,
        fingerprint: str,
        *,
        principal: str = "key:test",
        quotas: Quotas = UNLIMITED,
    ) -> UsedRequestId | None:
        key, now = (record.project_id, request_id), self.images.clock()
        found = self.kept.get(key)
        if found is not None and found[1] > now - timedelta(seconds=REQUEST_ID_RETENTION_SECONDS):
            image = self.images.records.get(found[0].image_id)
            if image is None or image.project_id != record.project_id:
                return dataclasses.replace(found[0], object_key=None)  # deleted since
            return found[0]
        await self.images.save(record, principal=principal, quotas=quotas)
        self.kept[key] = (UsedRequestId(fingerprint, record.id, record.object_key), now)
        return None

    async def prune(self) -> int:
        cutoff = self.images.clock() - timedelta(seconds=REQUEST_ID_RETENTION_SECONDS)
        expired = [key for key, (_, at) in self.kept.items() if at <= cutoff]
        for key in expired:
            del self.kept[key]
        return len(expired)


class FakeSigner:
    def __init__(self, fail: Exception | None = None) -> None:
        self.signed: list[tuple[str, str, int]] = []
        self.fail = fail

    async def presign_put(
        self,
        key: str,
        content_type: str,
        expires_in_seconds: int,
        *,
        size_bytes: int | None = None,
        sha256: str | None = None,
    ) -> PresignedUpload:
        if self.fail is not None:
            raise self.fail
        self.signed.append((key, content_type, expires_in_seconds))
        headers = {"Content-Type": content_type}
        if size_bytes is not None:
            headers["Content-Length"] = str(size_bytes)
        if sha256 is not None:
            headers["x-amz-checksum-sha256"] = base64.b64encode(bytes.fromhex(sha256)).decode()
        return PresignedUpload(
            url=f"https://s3.example/{key}?X-Amz-SignedHeaders="
            + "%3B".join([*sorted(h.lower() for h in headers), "host"]),
            method="PUT",
            headers=headers,
            expires_in_seconds=expires_in_seconds,
        )

    async def presign_post(
        self, key: str, content_type: str, expires_in_seconds: int, *, max_size_bytes: int
    ) -> PresignedUpload:
        if self.fail is not None:
            raise self.fail
        self.signed.append((key, content_type, expires_in_seconds))
        return PresignedUpload(
            url="https://s3.example/",
            method="POST",
            headers={},
            expires_in_seconds=expires_in_seconds,
            fields={"key": key, "Content-Type": content_type, "policy": f"<= {max_size_bytes}"},
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
            raise ObjectTooLarge(key, size=len(body))
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


class FakeOutcomeWrites:
    def __init__(self, images: InMemoryImageRepository) -> None:
        self.images = images

    async def content_blocked(self, digest: str) -> bool:
        return digest in self.images.blocked

    async def lock_processing(self, image_id: str) -> bool:
        record = self.images.records.get(image_id)
        return record is not None and record.status is ImageStatus.PROCESSING

    async def link_stored_content(self, sha256: str, declared_format: str) -> LinkResult:
        blob = self.images.blobs.get(sha256)
        if blob is None:
            return LinkResult(linked=False)
        if blob.collecting_since is not None:
            return LinkResult(linked=False, collecting=True)
        if blob.image.format != declared_format:
            return LinkResult(linked=False, mismatch=blob.image.format)
        if not blob.stored:
            return LinkResult(linked=False)
        self._touch(blob, +1)
        return LinkResult(linked=True, image=blob.image)

    async def reserve_content(
        self, image: VerifiedImage, variants: Sequence[VariantInfo]
    ) -> str | None:
        blob = self.images.blobs.get(image.sha256)
        if blob is None:
            blob = FakeBlob(image, (), self.images.clock())
            self.images.blobs[image.sha256] = blob
        elif blob.collecting_since is not None:
            return None
        known = {(v.name, v.format) for v in blob.variants}
        blob.variants += tuple(v for v in variants if (v.name, v.format) not in known)
        self._touch(blob, 0)
        return blob.reservation

    async def reference_content(self, sha256: str, reservation: str) -> bool:
        blob = self.images.blobs.get(sha256)
        if blob is None or blob.collecting_since is not None:
            return False
        if not blob.stored and blob.reservation != reservation:
            return False
        blob.stored = True
        self._touch(blob, +1)
        return True

    async def mark_ready(self, image_id: str, image: VerifiedImage) -> None:
        record = self.images.records.get(image_id)
        if record is None or record.status is not ImageStatus.PROCESSING:
            return
        blob = self.images.blobs[image.sha256]
        self.images.records[image_id] = dataclasses.replace(
            record,
            status=ImageStatus.READY,
            sha256=image.digest or image.sha256,
            content=image.sha256,
            size_bytes=image.size_bytes,
            width=image.width,
            height=image.height,
            detected_format=image.format,
            failure_reason=None,
            variants=tuple(sorted(blob.variants, key=lambda v: (v.name, v.format))),
            updated_at=self.images.clock(),
        )

    def _touch(self, blob: FakeBlob, references: int) -> None:
        blob.references += references
        blob.updated_at = self.images.clock()


class FakeOutcomes:
    """The processor's writes against the in-memory repository; a unit of work that raises
    leaves records and content as they were."""

    def __init__(self, images: InMemoryImageRepository) -> None:
        self.images = images
        self.retained: dict[str, int] = {}  # image id -> the days its bytes are kept

    @property
    def references(self) -> dict[str, int]:
        return {sha: blob.references for sha, blob in self.images.blobs.items()}

    @contextlib.asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[FakeOutcomeWrites]:
        records, blobs = dict(self.images.records), copy.deepcopy(self.images.blobs)
        try:
            yield FakeOutcomeWrites(self.images)
        except BaseException:
            self.images.records.clear()
            self.images.records.update(records)
            self.images.blobs.clear()
            self.images.blobs.update(blobs)
            raise

    async def mark_failed(
        self,
        image_id: str,
        reason: str,
        *,
        size_bytes: int | None = None,
        retained_days: int | None = None,
    ) -> bool:
        if retained_days is not None:
            self.retained[image_id] = retained_days
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

    async def is_blocked(self, digest: str) -> bool:
        return digest in self.images.blocked

    async def stored_keys(self, sha256: str) -> tuple[str, ...] | None:
        blob = self.images.blobs.get(sha256)
        if blob is None or not blob.stored or blob.collecting_since is not None:
            return None
        return (*(v.key for v in blob.variants), original_key(GLOBAL_SCOPE, sha256))

    async def start_attempt(self, image_id: str) -> int | None:
        record = self.images.records.get(image_id)
        if record is None or record.status is not ImageStatus.PROCESSING:
            return None
        self.images.records[image_id] = dataclasses.replace(record, attempts=record.attempts + 1)
        return record.attempts + 1


class FakeContentStore:
    def __init__(self, images: InMemoryImageRepository) -> None:
        self.images = images

    async def claim_unreferenced(
        self,
        *,
        grace_seconds: float,
        reservation_lease_seconds: float,
        claim_lifetime_seconds: float,
        limit: int,
    ) -> list[UnreferencedContent]:
        now = self.images.clock()

        def due_now(blob: FakeBlob) -> bool:
            if blob.references:
                return False
            if blob.collecting_since is not None:
                return blob.collecting_since <= now - timedelta(seconds=claim_lifetime_seconds)
            wait = grace_seconds if blob.stored else reservation_lease_seconds
            return blob.updated_at <= now - timedelta(seconds=wait)

        due = sorted(
            ((sha, blob) for sha, blob in self.images.blobs.items() if due_now(blob)),
            key=lambda item: item[1].updated_at,
        )[:limit]
        claimed = []
        for sha, blob in due:
            blob.collecting_since = blob.updated_at = now
            keys = (*(v.key for v in blob.variants), original_key(GLOBAL_SCOPE, sha))
            claimed.append(UnreferencedContent(sha, now, keys))
        return claimed

    async def still_claimed(self, content: UnreferencedContent, *, within_seconds: float) -> bool:
        blob = self.images.blobs.get(content.sha256)
        now = self.images.clock()
        return (
            blob is not None
            and blob.collecting_since == content.claimed_at
            and content.claimed_at > now - timedelta(seconds=within_seconds)
        )

    async def forget(self, content: UnreferencedContent) -> bool:
        blob = self.images.blobs.get(content.sha256)
        if blob is None or blob.collecting_since != content.claimed_at:
            return False
        del self.images.blobs[content.sha256]
        return True


class InlineJobs:
    """Runs image jobs in-process (unit tests only; the real runner forks a limited child)."""

    def __init__(self) -> None:
        self.calls = 0

    async def verify_and_render(
        self, data: bytes, content_type: str, limits: Limits, spec: RenderSpec
    ) -> JobResult:
        self.calls += 1
        return JobResult(verify_and_render(data, content_type, limits, spec), 0)
