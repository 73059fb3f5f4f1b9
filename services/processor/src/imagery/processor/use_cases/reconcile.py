"""The bucket compared with the database, both ways, page by page (never the whole bucket
at once), for what the normal paths cannot see:

- Objects no committed row needs: an original or a variant of content with no row (its
  writer's commit failed, it was written after its reservation was collected, or a restored
  database never knew it), an upload object of an image that does not exist. Deleted once
  older than the grace period, so a write in progress is never taken for an orphan; younger
  ones are only reported. With `remove_orphans=False` (`imagery-admin reconcile` without
  `--remove-orphans`) none is deleted: they are reported.
- Retained uploads (`retained/{image_id}`, kept for `imagery-admin reprocess`): needed while
  younger than `retained_days` and their record still has a use for them (FAILED for a
  retainable reason, or being reprocessed); removable once older, or once their record is
  READY, FAILED for another reason, or gone (a reprocessed image that ended leaves its copy
  here for this pass, or the bucket's `retained/` rule, to remove).
- Rows whose objects are gone (a lifecycle rule, a hand deletion, a local S3 that started
  empty, a database restored from before their content was collected): a missing original
  comes back from the newest earlier version the bucket keeps of it, when versioning is on;
  variants are rendered again from the original, each with the profile version it was made
  with, at the same key. Content with nothing left to serve or render from is marked lost:
  its images stay READY and are answered IMAGE_CONTENT_LOST (never served or linked to), and
  the next upload of the same bytes stores it again.

With `dry_run` it only reports what it would do.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from imagery.common.formats import content_type_of
from imagery.common.profiles import VariantProfile, default_profile
from imagery.common.storage_keys import (
    GLOBAL_SCOPE,
    VARIANT_CACHE_CONTROL,
    content_prefixes,
    image_id_from_retained_key,
    image_id_from_upload_key,
    original_key,
    retained_prefix,
    sha256_from_content_key,
    upload_prefix,
    variant_key,
)
from imagery.processor.imaging import Limits, Rejected, RenderSpec
from imagery.processor.ports import (
    BucketListing,
    ContentInventory,
    ImageJobs,
    ListedObject,
    Objects,
    ObjectVersions,
    StoredContent,
)

log = logging.getLogger(__name__)
PAGE = 500


Progress = Callable[[int], Awaitable[None]]  # told of each content checked (0: a page listed)
RESTORABLE = ("Enabled", "Suspended")  # versioning states that may keep earlier versions


@dataclass
class Report:
    orphans_deleted: list[str] = field(default_factory=list)  # or to delete, in a dry run
    orphans_kept: list[str] = field(default_factory=list)  # past the grace, removal not asked
    orphans_in_grace: list[str] = field(default_factory=list)  # younger: maybe being written
    originals_restored: list[str] = field(default_factory=list)  # from an earlier version
    variants_rebuilt: list[str] = field(default_factory=list)
    content_lost: list[str] = field(default_factory=list)  # sha256s with nothing left
    originals_lost: list[str] = field(default_factory=list)  # served, but not rebuildable
    versioning: str = "off"  # the bucket's, as `ObjectVersions.versioning` says
    grace_seconds: float = 0.0


class Reconciler:
    def __init__(
        self,
        listing: BucketListing,
        inventory: ContentInventory,
        objects: Objects,
        jobs: ImageJobs,
        *,
        grace_seconds: float,
        limits: Limits,
        spec: RenderSpec,
        max_original_bytes: int,
        retained_days: int = 7,
        versions: ObjectVersions | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._versions = versions
        self._retained_for = timedelta(days=retained_days)
        self._listing = listing
        self._inventory = inventory
        self._objects = objects
        self._jobs = jobs
        self._grace = timedelta(seconds=grace_seconds)
        self._limits = limits
        self._spec = spec  # encoder settings; its presets are the default profile (v0)
        self._default = default_profile(spec.presets)
        self._max_original = max_original_bytes
        self._clock = clock

    async def run(
        self,
        *,
        dry_run: bool = False,
        remove_orphans: bool = True,
        progress: Progress | None = None,
    ) -> Report:
        """One pass both ways. `progress` hears of every content checked (and of every page
        listed, as 0), so a caller can beat; whatever it raises ends the pass there."""
        report = Report(grace_seconds=self._grace.total_seconds())
        if self._versions is not None:
            report.versioning = await self._versions.versioning()
            if report.versioning == "unknown":
                log.warning("cannot read the bucket's versioning: no original is brought back")
        pass_ = _Pass(report, dry_run, remove_orphans, progress)
        for prefix in content_prefixes(GLOBAL_SCOPE):
            await self._orphans(prefix, pass_, self._orphaned_content)
        await self._orphans(upload_prefix(GLOBAL_SCOPE), pass_, self._orphaned_uploads)
        await self._orphans(retained_prefix(GLOBAL_SCOPE), pass_, self._removable_retained)
        await self._lost_objects(pass_)
        counts = {
            name: len(value) for name, value in vars(report).items() if isinstance(value, list)
        }
        if any(counts.values()):
            log.info(
                "reconciled the bucket with the database",
                extra={"dry_run": dry_run, "remove_orphans": remove_orphans, **counts},
            )
        return report

    async def _orphans(
        self,
        prefix: str,
        pass_: _Pass,
        orphaned: Callable[[list[ListedObject]], Awaitable[list[str]]],
    ) -> None:
        report = pass_.report
        after: str | None = None
        while True:
            page, after = await self._listing.list_page(prefix, after=after, limit=PAGE)
            found = set(await orphaned(page))
            due = self._clock() - self._grace
            old = [o.key for o in page if o.key in found and o.last_modified <= due]
            report.orphans_in_grace.extend(
                o.key for o in page if o.key in found and o.last_modified > due
            )
            if not pass_.remove_orphans:
                report.orphans_kept.extend(old)
            elif pass_.dry_run:
                report.orphans_deleted.extend(old)
            else:
                report.orphans_deleted.extend(await self._delete_orphans(old))
            await pass_.checked(0)
            if after is None:
                return

    async def _delete_orphans(self, keys: list[str]) -> list[str]:
        """Content objects are deleted under a claim row, as the collector does, so an upload
        of the same bytes that starts meanwhile waits instead of writing under our delete."""
        deleted: list[str] = []
        by_content: dict[str | None, list[str]] = {}
        for key in keys:
            by_content.setdefault(sha256_from_content_key(GLOBAL_SCOPE, key), []).append(key)
        for sha256, its_keys in by_content.items():
            if sha256 is None:  # an upload object with no record
                for key in its_keys:
                    await self._objects.delete(key)
                deleted.extend(its_keys)
                continue
            claimed = await self._inventory.claim_orphans(sha256)
            if claimed is None:
                continue  # it has a row now: not an orphan any more
            try:
                for key in its_keys:
                    await self._objects.delete(key)
                deleted.extend(its_keys)
            finally:
                await self._inventory.release_orphans(sha256, claimed)
        return deleted

    async def _orphaned_content(self, listed: list[ListedObject]) -> list[str]:
        owners = {o.key: sha256_from_content_key(GLOBAL_SCOPE, o.key) for o in listed}
        known = await self._inventory.known_content({s for s in owners.values() if s})
        return [key for key, sha in owners.items() if sha is not None and sha not in known]

    async def _orphaned_uploads(self, listed: list[ListedObject]) -> list[str]:
        owners = {o.key: image_id_from_upload_key(GLOBAL_SCOPE, o.key) for o in listed}
        known = await self._inventory.known_images({i for i in owners.values() if i})
        return [key for key, image in owners.items() if image is None or image not in known]

    async def _removable_retained(self, listed: list[ListedObject]) -> list[str]:
        kept_since = self._clock() - self._retained_for
        fresh = {
            o.key: image_id_from_retained_key(GLOBAL_SCOPE, o.key)
            for o in listed
            if o.last_modified > kept_since
        }
        needed = await self._inventory.retaining_images({i for i in fresh.values() if i})
        return [o.key for o in listed if fresh.get(o.key) not in needed]

    async def _lost_objects(self, pass_: _Pass) -> None:
        after: str | None = None
        while True:
            page = await self._inventory.stored_content(after=after, limit=PAGE)
            for content in page:
                try:
                    await self._check(content, pass_.report, pass_.dry_run)
                except Exception as exc:  # noqa: BLE001 - one content never stops the pass
                    log.warning(
                        "could not reconcile content",
                        extra={"sha256": content.sha256, "error": f"{type(exc).__name__}: {exc}"},
                    )
                await pass_.checked(1)
            if len(page) < PAGE:
                return
            after = page[-1].sha256

    async def _check(self, content: StoredContent, report: Report, dry_run: bool) -> None:
        original = original_key(GLOBAL_SCOPE, content.sha256)
        keys = (*content.keys, original)
        found = await asyncio.gather(*(self._objects.head(k) for k in keys))
        missing = [k for k, info in zip(keys, found, strict=True) if info is None]
        if not missing:
            return
        if original in missing:
            if not await self._restore(original, report, dry_run):
                if len(missing) == len(keys):  # nothing left to serve or to rebuild from
                    report.content_lost.append(content.sha256)
                    if not dry_run:
                        await self._inventory.mark_lost(content)
                else:
                    report.originals_lost.append(content.sha256)  # served; not rebuildable
                return
            missing.remove(original)
            if not missing:
                return
        if dry_run:
            report.variants_rebuilt.extend(missing)
            return
        data = await self._objects.get(original, max_bytes=self._max_original)
        by_version: dict[int, list[str]] = {}
        for key in missing:
            by_version.setdefault(content.version_of(key), []).append(key)
        made: set[str] = set()
        for version, its_keys in sorted(by_version.items()):
            profile = self._default if version == 0 else content.profiles.get(version)
            if profile is None:
                continue
            rendered = await self._render(content, data or b"", profile, its_keys)
            if rendered is None:
                report.content_lost.append(content.sha256)
                return
            made.update(rendered)
        report.variants_rebuilt.extend(sorted(made))
        unmakeable = [k for k in missing if k not in made]
        if unmakeable:  # presets no longer configured: stop serving them
            await self._inventory.drop_variants(content.sha256, unmakeable)

    async def _restore(self, original: str, report: Report, dry_run: bool) -> bool:
        """The original back from the newest earlier version the bucket keeps (its delete
        marker stays behind it), where versioning keeps one; the variants are then rendered
        from it as for any lost variant."""
        if self._versions is None or report.versioning not in RESTORABLE:
            return False
        version = await self._versions.latest_noncurrent(original)
        if version is None:
            return False
        if not dry_run and not await self._versions.restore_version(original, version):
            return False
        report.originals_restored.append(original)
        return True

    async def _render(
        self, content: StoredContent, data: bytes, profile: VariantProfile, missing: list[str]
    ) -> set[str] | None:
        """The `missing` keys of one profile version, rendered again with that version's
        presets (only those with a missing key) and written; None when the kept original no
        longer passes (the content is then marked lost)."""
        version = profile.version
        wanted = tuple(
            p
            for p in profile.presets
            if any(
                variant_key(GLOBAL_SCOPE, content.sha256, p.name, f, version) in missing
                for f in p.formats
            )
        )
        if not wanted:
            return set()
        spec = dataclasses.replace(self._spec, presets=wanted)
        try:
            job = await self._jobs.verify_and_render(
                data, content_type_of(content.format), self._limits, spec
            )
        except Rejected as rejected:  # the kept original no longer passes: it cannot serve
            log.warning(
                "a kept original failed to render",
                extra={"sha256": content.sha256, "reason": rejected.reason},
            )
            await self._inventory.mark_lost(content)
            return None
        made = set()
        for variant in job.processed.variants:
            key = variant_key(GLOBAL_SCOPE, content.sha256, variant.name, variant.format, version)
            if key in missing:
                await self._objects.put(
                    key,
                    variant.body,
                    content_type=variant.content_type,
                    cache_control=VARIANT_CACHE_CONTROL,
                )
                made.add(key)
        return made


@dataclass(frozen=True, slots=True)
class _Pass:
    """What one run was asked for, and what it found so far."""

    report: Report
    dry_run: bool
    remove_orphans: bool
    progress: Progress | None

    async def checked(self, contents: int) -> None:
        if self.progress is not None:
            await self.progress(contents)
