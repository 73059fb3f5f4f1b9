"""What rendering after ingest needs from the outside world (issue 17): the asks for one
preset of one content (`render_requests`, migration 0019) that the renderer claims and
answers, and the backfill job that asks for a project's missing renders. Kept apart from
`ports.py`, which the upload path uses; the same rule holds: no driver here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from imagery.common.domain import VariantInfo
from imagery.common.presets import Preset
from imagery.common.profiles import VariantProfile
from imagery.processor.ports import AdminJob


@dataclass(frozen=True, slots=True)
class RenderRequest:
    """A claimed ask: render `preset` of the content `sha256` at profile `version`."""

    sha256: str
    version: int
    preset: str
    project_id: str
    source: str  # "lazy" (a URL asked for it) or "backfill"
    attempts: int  # claims so far, this one included
    claimed_at: datetime  # this claim: a request retaken since is not ours to release


@dataclass(frozen=True, slots=True)
class RenderSource:
    """What a claimed ask renders from: its content, and its project's profile now."""

    format: str  # the original's format, as verified
    profile: VariantProfile | None  # the project's current profile; None: the default (v0)


class RenderRequests(Protocol):
    async def claim(self, *, stale_after_seconds: float) -> RenderRequest | None:
        """The next due ask (lazy ones first, then backfill, oldest first), or one whose
        claim is older than `stale_after_seconds` (its processor died); counts an attempt.
        Never the same ask to two claimers at once."""
        ...

    async def source(self, request: RenderRequest) -> RenderSource | None:
        """None when the content is no longer stored and referenced (deleted, being
        collected) or its project is gone or deleted."""
        ...

    async def covered(self, request: RenderRequest, version: int) -> bool:
        """Whether the preset has a variant row at `version` already, or (when `version` is
        not the ask's own) another ask asks for it at `version`."""
        ...

    async def complete(
        self,
        request: RenderRequest,
        version: int,
        variants: Sequence[VariantInfo],
        wanted: Sequence[tuple[str, str]],
    ) -> bool | None:
        """In one transaction, once the objects are written: the variant rows, the ask gone
        (with one for the same preset at `version`), the content moved to `version` when it
        now has every (preset, format) of `wanted` there (a "jpeg" is met by a PNG: the
        fallback of an image with alpha), and a change-bus notice for every image on the
        content. Whether it moved; None when the content went meanwhile (nothing written)."""
        ...

    async def move(self, request: RenderRequest, version: int) -> None:
        """Ask again at `version` instead (a no-op where that is asked already), keeping who
        asked; the ask at its own version goes."""
        ...

    async def drop(self, request: RenderRequest, *, failed: bool) -> None:
        """Forget the ask; `failed` counts it against the backfill job that asked."""
        ...

    async def retry_later(
        self, request: RenderRequest, *, after_seconds: float, stale_after_seconds: float
    ) -> None:
        """Keep the claim so that the ask is retaken in `after_seconds`."""
        ...

    async def release(self, request: RenderRequest) -> None:
        """Give the claim back uncounted (shutdown): the ask is due again at once."""
        ...


@dataclass(frozen=True, slots=True)
class BackfillBatch:
    contents: int  # contents below the version walked (0: the walk is over)
    renders: int  # asks made for them
    last: str  # the walk resumes after this content address


class Backfills(Protocol):
    async def current_profile(self, job: AdminJob) -> tuple[bool, VariantProfile | None]:
        """(whether the project exists and is not deleted, its current profile or None for
        the default)."""
        ...

    async def begin(self, job: AdminJob, version: int) -> str | None:
        """Fix the job's version; the address to resume after ('' from the start, and again
        when the version changed since the job last ran). None: the job is not ours now."""
        ...

    async def enqueue(
        self, job: AdminJob, *, version: int, after: str, limit: int, presets: Sequence[Preset]
    ) -> BackfillBatch | None:
        """The next `limit` contents of the project below `version`, after `after`: asks for
        their `presets` with no variant at `version`; those with none missing are moved to
        `version` (and announced). Keeps its place in the job. None: the job is not ours now."""
        ...

    async def pending(self, job: AdminJob) -> int:
        """The job's asks not answered yet."""
        ...

    async def progress(self, job: AdminJob, profile: VariantProfile) -> bool:
        """Record the project's contents and those at `profile`'s version with all its
        at-ingest presets (and beat); False when the job is no longer ours to run."""
        ...
