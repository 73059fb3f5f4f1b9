"""WatchImage: an image's state as a stream, fanned out in memory from the change bus.

Postgres announces every visible change of an image record as `state:<id>` when it commits,
a deletion as `image:<id>`, and a project's deletion or purge as `project:<id>`. One
`Watchers` hub per process hears them (it is a change-bus subscriber) and reads the images
they name again, in batches: a notice costs one read of its image however many watch it,
and notices that arrive while a read is queued join it. Each watcher is handed the latest
state it has not seen yet (a slow client skips states, never falls behind). Nothing polls
while the bus listens. When the bus may have missed notices (`reset`: on losing its
connection and again on listening) every watched image is read again, and while it is down
every `poll_seconds` too, so a missed READY never leaves a watcher waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncGenerator, Callable
from typing import Any

from imagery.common.domain import ImageRecord
from imagery.common.errors import (
    DependencyUnavailable,
    ImageNotFound,
    ImageryError,
    QuotaExceeded,
    ServerBusy,
)
from imagery.common.ids import require_image_id
from imagery.common.tenancy import Principal
from imagery.delivery.ports import ImageStates

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (project id, image id): a watcher sees only its own project's image
POLL_SECONDS = 1.0  # while the bus is down; its staleness bound is 1 s, so is this
RETRY_SECONDS = 1.0  # after a failed read
BUSY_RETRY_SECONDS = 2.0  # streams free their slots slowly: ask for a little patience
BATCH = 500  # keys per read


class TooManyWatchers(ServerBusy):
    """This replica serves as many watchers as it may (SERVER_BUSY, like the call cap)."""

    def __init__(self, limit: int, retry_after: float) -> None:
        ImageryError.__init__(
            self,
            f"This server is serving its maximum of {limit} image watchers: retry after "
            f"{retry_after:g} s, with backoff (another replica may take the stream at once).",
            metadata={"max_watchers": str(limit)},
        )
        self.retry_after = retry_after


class TooManyProjectWatchers(QuotaExceeded):
    """The caller's project holds its share of this replica's watchers (QUOTA_EXCEEDED): one
    project cannot take every slot from the others."""

    def __init__(self, project_id: str, limit: int, retry_after: float) -> None:
        ImageryError.__init__(
            self,
            f"Project {project_id!r} has its maximum of {limit} image watchers open on this "
            f"server: close streams it no longer needs, or retry after {retry_after:g} s, with "
            "backoff.",
            metadata={"max_watchers_per_project": str(limit)},
        )
        self.retry_after = retry_after
        self.quota_violations = (
            (f"projects/{project_id}", f"at most {limit} image watchers open on one server"),
        )


class WatchInterrupted(DependencyUnavailable):
    """The replica stops serving streams (it is shutting down): open the stream again."""

    def __init__(self) -> None:
        super().__init__(
            "This server is shutting down: open the stream again (it starts with the "
            "current state; another replica answers)."
        )


def _visible(record: ImageRecord) -> tuple[Any, ...]:
    """What a client sees of a record, the update time aside: a write that changes nothing
    else is no news."""
    return (
        record.status,
        record.content_type,
        record.file_name,
        record.size_bytes,
        record.width,
        record.height,
        record.sha256,
        record.detected_format,
        record.failure_reason,
        record.created_at,
        record.variants,
        sorted(record.labels.items()),
    )


class Watcher:
    """One stream's view: the latest state it has not been handed yet, or why it ends."""

    __slots__ = ("_error", "_latest", "_seen", "_wake", "key")

    def __init__(self, key: Key) -> None:
        self.key = key
        self._latest: ImageRecord | None = None
        self._seen: tuple[Any, ...] | None = None
        self._error: BaseException | None = None
        self._wake = asyncio.Event()

    @property
    def started(self) -> bool:
        """It has been offered a state (so a failed read need not end it)."""
        return self._seen is not None

    def offer(self, record: ImageRecord) -> None:
        view = _visible(record)
        if view != self._seen:
            self._seen, self._latest = view, record
            self._wake.set()

    def fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
            self._wake.set()

    async def next(self) -> ImageRecord:
        """The next state (states offered meanwhile are skipped: only the latest counts);
        raises the error the stream ends with."""
        while self._latest is None:
            if self._error is not None:
                raise self._error
            self._wake.clear()
            await self._wake.wait()
        record, self._latest = self._latest, None
        return record


class _Entry:
    __slots__ = ("known", "record", "watchers")

    def __init__(self) -> None:
        self.watchers: set[Watcher] = set()
        self.known = False  # read at least once: `record` is what it was
        self.record: ImageRecord | None = None  # None once known: gone


class Watchers:
    """The process's watched images, their watchers (at most `max_watchers`, of which one
    project holds at most `max_watchers_per_project`), and the one task that reads them."""

    def __init__(
        self,
        states: ImageStates,
        *,
        listening: Callable[[], bool],
        max_watchers: int,
        max_watchers_per_project: int,
        poll_seconds: float = POLL_SECONDS,
        retry_seconds: float = RETRY_SECONDS,
        batch: int = BATCH,
    ) -> None:
        self._states = states
        self._listening = listening
        self.max_watchers = max_watchers
        self.max_watchers_per_project = max_watchers_per_project
        self._poll = poll_seconds
        self._retry = retry_seconds
        self._batch = batch
        self._entries: dict[Key, _Entry] = {}
        self._by_image: dict[str, set[Key]] = {}
        self._dirty: dict[Key, None] = {}  # to read, in order of arrival
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.watchers = 0
        self._by_project: dict[str, int] = {}  # open watchers; a project with none is absent
        self.reads = 0  # batches read, for tests and the benchmark

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="watchers")

    async def close(self) -> None:
        """End every stream with UNAVAILABLE (reopen) and refuse new ones. Idempotent."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for entry in self._entries.values():
            for watcher in entry.watchers:
                watcher.fail(WatchInterrupted())

    def watch(self, key: Key) -> Watcher:
        """A new watcher of `key`, offered the current state at once when this process
        knows it for sure, else as soon as it is read."""
        if self._closed:
            raise WatchInterrupted()
        # The replica's cap first: where one project has every slot, full is SERVER_BUSY.
        if self.watchers >= self.max_watchers:
            raise TooManyWatchers(self.max_watchers, BUSY_RETRY_SECONDS)
        project = key[0]
        if self._by_project.get(project, 0) >= self.max_watchers_per_project:
            raise TooManyProjectWatchers(project, self.max_watchers_per_project, BUSY_RETRY_SECONDS)
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
            self._by_image.setdefault(key[1], set()).add(key)
        watcher = Watcher(key)
        entry.watchers.add(watcher)
        self.watchers += 1
        self._by_project[project] = self._by_project.get(project, 0) + 1
        if entry.known and key not in self._dirty and self._listening():
            self._hand(watcher, entry.record)
        else:
            self._mark(key)
        return watcher

    def project_watchers(self, project_id: str) -> int:
        """The project's open watchers (what its share is counted against)."""
        return self._by_project.get(project_id, 0)

    def unwatch(self, watcher: Watcher) -> None:
        entry = self._entries.get(watcher.key)
        if entry is None or watcher not in entry.watchers:
            return
        entry.watchers.discard(watcher)
        self.watchers -= 1
        key = watcher.key
        left = self._by_project[key[0]] - 1
        if left:
            self._by_project[key[0]] = left
        else:
            del self._by_project[key[0]]
        if not entry.watchers:
            del self._entries[key]
            self._dirty.pop(key, None)
            keys = self._by_image[key[1]]
            keys.discard(key)
            if not keys:
                del self._by_image[key[1]]

    # change-bus subscriber
    def changed(self, change: str) -> None:
        kind, _, ident = change.partition(":")
        if kind in ("state", "image"):
            for key in self._by_image.get(ident, ()):
                self._mark(key)
        elif kind == "project":
            for key in [k for k in self._entries if k[0] == ident]:
                self._mark(key)

    def reset(self) -> None:
        for key in self._entries:
            self._mark(key)

    def _mark(self, key: Key) -> None:
        self._dirty[key] = None
        self._wake.set()

    async def _run(self) -> None:
        while True:
            if not self._dirty:
                await self._idle()
                continue
            batch = list(itertools.islice(self._dirty, self._batch))
            for key in batch:
                del self._dirty[key]
            try:
                found = await self._states.read_states(batch)
            except Exception as exc:  # noqa: BLE001 - the hub must outlive any failed read
                self._failed(batch, exc)
                await asyncio.sleep(self._retry)
                continue
            self.reads += 1
            for key in batch:
                entry = self._entries.get(key)
                if entry is not None:  # else nobody watches it any more
                    entry.known, entry.record = True, found.get(key)
                    for watcher in list(entry.watchers):
                        self._hand(watcher, entry.record)

    async def _idle(self) -> None:
        """Until something is to be read; while the bus is down, every watched image is
        read again every `poll_seconds`."""
        self._wake.clear()
        if self._listening():
            await self._wake.wait()
            return
        try:
            await asyncio.wait_for(self._wake.wait(), self._poll)
        except TimeoutError:
            self.reset()

    @staticmethod
    def _hand(watcher: Watcher, record: ImageRecord | None) -> None:
        if record is None:
            watcher.fail(ImageNotFound(watcher.key[1]))
        else:
            watcher.offer(record)

    def _failed(self, batch: list[Key], exc: Exception) -> None:
        """A read failed: its images are read again after `retry_seconds`; a watcher that
        has not had its first state yet ends with the error (UNAVAILABLE: reopen)."""
        if isinstance(exc, ImageryError):
            log.warning("watched images could not be read", extra={"error": exc.message})
        else:
            log.error("watched images could not be read", exc_info=exc)
        for key in batch:
            entry = self._entries.get(key)
            if entry is None:
                continue
            self._dirty.setdefault(key, None)
            for watcher in entry.watchers:
                if not watcher.started:
                    watcher.fail(exc)


class WatchImage:
    """The caller's image as it is now, then as it changes, until it is READY, FAILED or BLOCKED."""

    def __init__(self, watchers: Watchers) -> None:
        self._watchers = watchers

    async def __call__(
        self, caller: Principal, *, image_id: str
    ) -> AsyncGenerator[ImageRecord, None]:
        watcher = self._watchers.watch((caller.project_id, require_image_id(image_id)))
        try:
            while True:
                record = await watcher.next()
                yield record
                if record.status.terminal:
                    return
        finally:
            self._watchers.unwatch(watcher)
