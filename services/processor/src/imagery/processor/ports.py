"""What the processor's use cases need from the outside world, and the types they trade."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from imagery.common.domain import ImageRecord, ImageStatus, VariantInfo
from imagery.common.profiles import VariantProfile
from imagery.common.tenancy import Actor
from imagery.processor.imaging import Insights, Limits, Processed, RenderSpec

# --- the bucket --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    content_type: str | None
    etag: str | None


class RetryLater(Exception):
    """The upload cannot be finished now for a reason that is neither the file's fault nor an
    outage (a job the kernel killed): the message comes back after its backoff."""


class ObjectTooLarge(Exception):
    """An object holds more bytes than the reader would take; `size` is how many it holds."""

    def __init__(self, key: str, *, size: int) -> None:
        super().__init__(f"Object {key} holds {size} bytes, more than allowed.")
        self.size = size


class Objects(Protocol):
    async def head(self, key: str) -> ObjectInfo | None: ...

    async def get(self, key: str, *, max_bytes: int) -> bytes | None:
        """None when missing; raises ObjectTooLarge past `max_bytes`."""
        ...

    async def put(
        self, key: str, body: bytes, *, content_type: str, cache_control: str | None = None
    ) -> None: ...

    async def copy(self, source_key: str, key: str, *, content_type: str) -> str | None:
        """The copy's SHA-256 (base64) as the store computed it; None if the source is gone."""
        ...

    async def delete(self, key: str) -> None: ...


# --- the queue ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueMessage:
    message_id: str
    receipt_handle: str
    body: str
    receive_count: int
    sent_at: float | None = None  # when SQS first accepted it (Unix seconds), if known


class MessageQueue(Protocol):
    async def receive(
        self, *, max_messages: int = 10, wait_seconds: int = 20
    ) -> list[QueueMessage]: ...

    async def delete(self, messages: Sequence[QueueMessage]) -> list[QueueMessage]:
        """Delete in batches; returns the messages whose deletion failed."""
        ...

    async def change_visibility(self, message: QueueMessage, timeout_seconds: int) -> None: ...


class QueueDepth(Protocol):
    async def approximate_depth(self) -> int: ...


class QueueCounts(Protocol):
    async def approximate_counts(self) -> Mapping[str, int]:
        """Messages by state: `visible`, `in_flight` (received, not deleted), `delayed`."""


class DeadLetters(Protocol):
    """The dead-letter queue, as far as moving its messages back is concerned."""

    async def receive(
        self, *, max_messages: int = 10, wait_seconds: int = 20
    ) -> list[QueueMessage]: ...

    async def delete(self, messages: Sequence[QueueMessage]) -> list[QueueMessage]: ...

    async def change_visibility(self, message: QueueMessage, timeout_seconds: int) -> None: ...

    async def approximate_depth(self) -> int: ...


class MessageSender(Protocol):
    async def send(self, bodies: Sequence[str]) -> None:
        """Send the bodies as new messages; raises when any was not accepted."""
        ...


class UploadProjects(Protocol):
    async def projects_of(self, image_ids: Collection[str]) -> dict[str, str]:
        """The project of each image still to be processed (`pending` or `processing`), by
        image id, in one indexed read that claims nothing; unknown and finished images are
        left out."""
        ...


class DependencyProbe(Protocol):
    async def check(self) -> None:
        """Return when Postgres and S3 answer; raise DependencyUnavailable while one does not."""
        ...


# --- image jobs --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JobResult:
    processed: Processed
    peak_rss_bytes: int | None  # the job process's peak resident memory


class ImageJobs(Protocol):
    async def verify_and_render(
        self, data: bytes, content_type: str, limits: Limits, spec: RenderSpec
    ) -> JobResult:
        """Verify the bytes and make the variants, isolated from this process; raises
        `imaging.Rejected` when the file fails its job (bad bytes, or a limit it hit)."""
        ...


# --- records and content -----------------------------------------------------------------


class Images(Protocol):
    async def find_for_processing(self, image_id: str) -> ImageRecord | None:
        """The record, whichever project holds it."""

    async def claim_for_processing(
        self, image_id: str, *, stale_after_seconds: float
    ) -> ImageRecord | None:
        """The claimed record carries its project's content scope and settings."""

    async def claim_unfinished(
        self, *, idle_seconds: float, lease_seconds: float, limit: int = 100
    ) -> list[ImageRecord]: ...

    async def update_status(
        self,
        image_id: str,
        status: ImageStatus,
        *,
        failure_reason: str | None = None,
        only_from: Collection[ImageStatus] | None = None,
    ) -> bool: ...


@dataclass(frozen=True, slots=True)
class VerifiedImage:
    sha256: str  # the content address (`tenancy.content_address`): where the objects live
    format: str
    width: int
    height: int
    size_bytes: int
    digest: str | None = None  # the bytes' SHA-256, where it differs from the address
    profile_version: int = 0  # the variant profile version its variants are rendered for
    insights: Insights | None = None  # placeholders, colours, pHash: kept with new content


@dataclass(frozen=True, slots=True)
class LinkResult:
    linked: bool
    image: VerifiedImage | None = None
    mismatch: str | None = None  # the known content's real format, when it differs
    collecting: bool = False  # the content is being deleted right now: try again later
    refused: str | None = None  # known content this project's limits refuse (a reason)


@dataclass(frozen=True, slots=True)
class UnreferencedContent:
    """A blob claimed for collection: its objects are to go, then its row."""

    sha256: str
    claimed_at: datetime
    keys: tuple[str, ...]  # every object of the content: original and variants


class OutcomeWrites(Protocol):
    """The writes of one transaction. Entered through `Outcomes.unit_of_work()`, it commits
    when the block ends normally and rolls back when the block raises. Never hold one across
    an S3 call."""

    async def content_blocked(self, digest: str) -> bool:
        """Whether the bytes with this SHA-256 are taken down (`imagery-admin block`), checked
        under a lock the takedown takes too: call it before marking an image READY."""
        ...

    async def lock_processing(self, image_id: str) -> bool:
        """Lock the record while it is `processing`; False when it is not (another worker
        finished it, or it was deleted): the caller must write nothing for it."""
        ...

    async def link_stored_content(self, sha256: str, declared_format: str) -> LinkResult:
        """Add a reference to content whose objects are stored and not being collected (an
        unreferenced tombstone comes back to life this way). Not linked when there is no such
        content, or when it is of another format (`mismatch`; nothing changed)."""
        ...

    async def reserve_content(
        self, image: VerifiedImage, variants: Sequence[VariantInfo]
    ) -> str | None:
        """Before its objects are written: make the content's row exist (unreferenced, so a
        write that never completes is collected like any other) and hold off collection.
        Returns the reservation to reference, or None when the content is being collected
        right now: try later."""
        ...

    async def reference_content(self, sha256: str, reservation: str) -> bool:
        """After its objects were written: add a reference to the content and mark its
        objects stored, if they are stored already or `reservation` still holds the row.
        False when the reservation lapsed (a collector took the row, or the row is another
        reservation's now): the objects written may be gone, so reserve and write again."""
        ...

    async def mark_ready(self, image_id: str, image: VerifiedImage) -> None: ...


class Outcomes(Protocol):
    def unit_of_work(self) -> AbstractAsyncContextManager[OutcomeWrites]: ...

    async def mark_failed(
        self,
        image_id: str,
        reason: str,
        *,
        size_bytes: int | None = None,
        retained_days: int | None = None,
    ) -> bool:
        """`processing` -> FAILED; False when the record was not processing. With
        `retained_days`, its bytes are kept under `retained/` until that many days from now."""
        ...

    async def release_claim(self, image_id: str) -> None:
        """`processing` -> `pending` (shutdown, transient trouble)."""
        ...

    async def is_blocked(self, digest: str) -> bool:
        """Whether the bytes with this SHA-256 are taken down (`imagery-admin block`)."""
        ...

    async def stored_keys(self, sha256: str) -> tuple[str, ...] | None:
        """Every object key of content that is stored and not being collected (original and
        variants), or None when there is no such content."""
        ...

    async def start_attempt(self, image_id: str) -> int | None:
        """Count a job started for the record; the attempts so far, or None when the record
        is no longer `processing`."""
        ...


class ContentStore(Protocol):
    """Content nobody refers to, claimed for collection once it has been left long enough."""

    async def claim_unreferenced(
        self,
        *,
        grace_seconds: float,
        reservation_lease_seconds: float,
        claim_lifetime_seconds: float,
        limit: int,
    ) -> list[UnreferencedContent]:
        """Unreferenced content that is due: stored content (a tombstone) untouched for
        `grace_seconds`, a reservation never completed for `reservation_lease_seconds`, or a
        claim older than `claim_lifetime_seconds` (its collector died). Each is marked as
        being collected: nothing links to it, reserves it or revives it any more."""
        ...

    async def still_claimed(self, content: UnreferencedContent, *, within_seconds: float) -> bool:
        """Whether this claim still holds and is younger than `within_seconds`."""
        ...

    async def forget(self, content: UnreferencedContent) -> bool:
        """Delete the row of collected content (its objects are gone); False when another
        collector has taken it over since."""
        ...


@dataclass(frozen=True, slots=True)
class ListedObject:
    key: str
    last_modified: datetime


class BucketListing(Protocol):
    async def list_page(
        self, prefix: str, *, after: str | None, limit: int
    ) -> tuple[list[ListedObject], str | None]:
        """One page of the keys under `prefix`, in key order, starting after `after`; and the
        key to continue after, or None when this was the last page."""
        ...


class ObjectVersions(Protocol):
    """Earlier versions of objects, where the bucket keeps them (S3 versioning: a deleted
    object leaves a delete marker, and its bytes as a noncurrent version)."""

    async def versioning(self) -> str:
        """The bucket's versioning: "Enabled", "Suspended", "off" (never turned on), or
        "unknown" (the status cannot be read)."""
        ...

    async def latest_noncurrent(self, key: str) -> str | None:
        """The version id of the newest earlier version of a deleted object; None when the
        object exists, or no earlier version of it is kept."""
        ...

    async def restore_version(self, key: str, version_id: str) -> bool:
        """Make that version the object again (a copy of it over the delete marker); False
        when the version is gone."""
        ...


@dataclass(frozen=True, slots=True)
class StoredContent:
    sha256: str
    format: str
    keys: tuple[str, ...]  # its variants' objects, as the rows name them
    updated_at: datetime  # as read: a later change makes marking it lost a no-op
    versions: tuple[int, ...] = ()  # each key's profile version (none given: all 0)
    # The project's profiles at the versions above 0 that its variants were rendered with
    # (version 0 is the deployment's default): what a lost variant is rendered again with.
    profiles: Mapping[int, VariantProfile] = field(default_factory=dict)

    def version_of(self, key: str) -> int:
        return self.versions[self.keys.index(key)] if self.versions else 0


class ContentInventory(Protocol):
    """What the reconciler compares the bucket with."""

    async def known_content(self, sha256s: Collection[str]) -> set[str]:
        """The ones that have a row, in any state."""
        ...

    async def known_images(self, image_ids: Collection[str]) -> set[str]:
        """The ones that have a record."""
        ...

    async def retaining_images(self, image_ids: Collection[str]) -> set[str]:
        """The ones whose retained bytes are still of use: FAILED for a retainable reason, or
        back to `pending`/`processing` by `imagery-admin reprocess`."""
        ...

    async def stored_content(self, *, after: str | None, limit: int) -> list[StoredContent]:
        """A page of referenced, stored content in sha256 order, starting after `after`."""
        ...

    async def mark_lost(self, content: StoredContent) -> bool:
        """Its objects are gone for good: it stops being stored (nothing links to it) and its
        variants stop being served; an upload of the same bytes stores it again. False when
        the content changed since it was read (a new upload rebuilt it meanwhile)."""
        ...

    async def drop_variants(self, sha256: str, keys: Collection[str]) -> None:
        """Forget variants whose objects are gone and cannot be made again (presets no
        longer configured): they stop being served."""
        ...

    async def claim_orphans(self, sha256: str) -> datetime | None:
        """Before deleting objects of content with no row: a row that says a collector holds
        it, so nothing reserves or links to it meanwhile; None when a row exists now."""
        ...

    async def release_orphans(self, sha256: str, claimed_at: datetime) -> None: ...


# --- operator jobs (imagery-admin) -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AdminJob:
    id: int
    kind: str  # "purge_project", "backfill", "reprocess", "reconcile" or "takedown"
    target: str  # the project id (the image id for "reprocess", the SHA-256 for "takedown")
    requested_by: str
    claim: str  # this run's claim: progress by a processor that lost it is refused


@dataclass(frozen=True, slots=True)
class PurgedImage:
    id: str
    terminal: bool  # READY or FAILED: no upload object is left to delete
    object_key: str


@dataclass(frozen=True, slots=True)
class ReconcileOptions:
    """What `imagery-admin reconcile` asked for."""

    dry_run: bool  # report what a run would do, change nothing
    remove_orphans: bool  # remove orphans past the grace (otherwise only report them)


class ReconcileJobs(Protocol):
    """Reconcile jobs (`imagery-admin reconcile`): their options, progress and result."""

    async def begin(self, job: AdminJob) -> ReconcileOptions | None:
        """Start (or start again) the job: no progress yet, the stored content to check as
        its total; its options, or None when the job is no longer ours."""
        ...

    async def progress(self, job: AdminJob, *, done: int) -> bool:
        """The contents checked so far (and a heartbeat); False when the job is not ours."""
        ...

    async def ready_images_of(
        self, sha256s: Collection[str], *, limit: int
    ) -> tuple[int, list[str]]:
        """How many READY images use this content, and the first `limit` of their ids."""
        ...

    async def finish(self, job: AdminJob, result: Mapping[str, object]) -> None:
        """Done, with the result `imagery-admin reconcile` prints (audited unless a dry run)."""
        ...


class AdminJobs(Protocol):
    async def enqueue_due_purges(self) -> None:
        """Queue a purge for every deleted project past its purge time (once)."""

    async def claim(self, *, stale_after_seconds: float) -> AdminJob | None:
        """The oldest queued job, or a running one whose processor stopped beating."""

    async def progress(self, job: AdminJob, *, done: int, total: int | None = None) -> bool: ...

    async def finish(self, job: AdminJob, *, error: str | None = None) -> None: ...

    async def project_images(self, project_id: str) -> int: ...

    async def purge_images(self, project_id: str, limit: int) -> list[PurgedImage]:
        """Remove up to `limit` of the project's images as DeleteImage would."""

    async def reprocess_target(self, image_id: str) -> tuple[str, str] | None:
        """The upload key and content type of an image `imagery-admin reprocess` set back to
        `pending`; None when it is not pending any more (or gone)."""

    async def reprocess_lost(self, image_id: str) -> bool:
        """Its retained bytes are gone: `pending` -> FAILED (NOT_UPLOADED), as the sweep
        would end it later; False when it was not pending."""

    async def forget_project(self, project_id: str, actor: Actor) -> str:
        """Delete the emptied, deleted project with its credentials: "purged", or why not
        ("restored", "not empty")."""


# --- retention ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetentionRule:
    """Housekeeping prunes what `table` keeps once it is older than `days` (at least 1).
    `table` is what the `imagery.table.rows` metric calls it: `failed_images` are the FAILED
    rows of `image_records`."""

    table: str
    days: int


class Retention(Protocol):
    async def prune(self, table: str, *, days: int, limit: int) -> int:
        """One batch in a short transaction of its own: delete up to `limit` rows of `table`
        (a `RetentionRule.table`) older than `days`, found by an index, never a row that
        something still needs; how many went."""
        ...

    async def row_estimates(self) -> dict[str, int]:
        """The rows each kept table holds, by its metric name, from the planner's statistics
        (an exact count only where a table has none yet: it was never analyzed)."""
        ...


# --- image events ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """One event as the outbox holds it (migration 0026): written by the change it reports."""

    id: int
    type: str  # image.ready, image.failed, image.blocked, image.deleted
    project_id: str
    image_id: str
    sequence: int  # the image's own count: a later change has a higher one
    trace_context: str | None  # W3C traceparent of the call that created the image
    payload: Mapping[str, object]
    created_at: datetime


class PendingEvents(Protocol):
    """A batch of unpublished events, held by this relay until the batch ends (a relay that
    dies lets them go, and another publishes them again)."""

    events: Sequence[OutboxEvent]

    async def mark_published(self, ids: Collection[int]) -> None: ...


class EventOutbox(Protocol):
    def pending(self, limit: int) -> AbstractAsyncContextManager[PendingEvents]:
        """The oldest unpublished events no other relay holds, up to `limit`."""
        ...

    async def oldest_pending_age(self) -> float:
        """Seconds since the oldest unpublished event was written (0 when none waits)."""
        ...


class EventPublisher(Protocol):
    async def publish(self, events: Sequence[OutboxEvent]) -> list[int]:
        """Publish each event; the ids of those the topic accepted (the others are tried
        again later)."""
        ...


# --- takedown ----------------------------------------------------------------------------


class TakedownRecords(Protocol):
    """What a takedown job (`imagery-admin block`) reads and changes in Postgres."""

    async def begin(self, job: AdminJob) -> Mapping[str, Any] | None:
        """Take the job as the claim holder: what earlier runs saved (empty at first), or
        None when it is not ours any more."""
        ...

    async def save(self, job: AdminJob, state: Mapping[str, Any]) -> bool:
        """Keep what the run found and did (and beat the heartbeat); False when the job is
        not ours any more."""
        ...

    async def still_blocked(self, sha256: str) -> bool: ...

    async def addresses(self, sha256: str) -> list[str]:
        """Every content address the bytes may have, in every project (deleted ones too)."""
        ...

    async def with_rows(self, addresses: Collection[str]) -> list[str]:
        """The addresses that have a content row (stored, or being collected)."""
        ...

    async def forget_content(self, addresses: Collection[str]) -> list[str]:
        """Delete the rows of that content nothing references any more (its variants, its
        blob): the addresses that had a row."""
        ...

    async def finish(self, job: AdminJob, result: Mapping[str, Any]) -> None: ...


class EveryVersion(Protocol):
    async def delete_every_version(self, prefix: str) -> int:
        """Delete every object under `prefix`, with every earlier version and delete marker
        S3 versioning keeps of it: how many versions went."""
        ...


@dataclass(frozen=True, slots=True)
class Invalidation:
    id: str
    paths: tuple[str, ...]


class CdnInvalidator(Protocol):
    async def invalidate(self, paths: Sequence[str], *, reference: str) -> Invalidation:
        """Ask the CDN to drop what it caches under `paths` (a trailing `*` is a wildcard).
        The same `reference` again is the same invalidation, not a new one."""
        ...
