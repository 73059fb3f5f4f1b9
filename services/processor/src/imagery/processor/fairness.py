"""Each project's fair share of one processor's uploads in flight.

A project holds at most `max_in_flight` of them. A message whose project is at its cap is
deferred: it goes back to the queue for a while (its visibility is changed), holds no slot,
spends no attempt and is no failure. Another project's upload is admitted as soon as it is
received, so one project's burst delays it by a job or two, not by the whole burst.

How long a deferral lasts: a random part (full jitter) of half the time this processor needs
to run the project's deferred backlog at its cap. The burst comes back about twice as fast as
its cap lets it run, so its share never idles while its messages wait in the queue, and those
that come back too early are deferred again, for less: a message is received a few times,
not once a second. And at least a second for every four receives so far (up to a minute), so
a message spends its `maxReceiveCount` of 1000 only after more than 14 hours of deferrals.

A deferral lasts a whole second at least (SQS counts visibility in seconds), longer than a
share of small jobs takes to run: a project alone on the processor, its burst all deferred,
would leave the slots idle until its messages came back. So up to `room` messages over their
project's cap wait here instead, kept invisible, in the order received; each starts as soon as
its project's share has a place (`next_admitted`). Only what the room cannot take is deferred.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import random
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from opentelemetry import metrics

from imagery.common.upload_events import ParsedMessage
from imagery.processor.ports import QueueMessage, UploadProjects

log = logging.getLogger(__name__)
_DEFERRED = metrics.get_meter(__name__).create_counter(
    "imagery.processor.messages.deferred",
    description="Messages sent back for later because their project had its share in flight",
)
MAX_DEFER_SECONDS = 900
SPREAD = 0.5  # of the time the project's deferred backlog takes: when they come back
RECEIVES_PER_FLOOR_SECOND = 4
MAX_FLOOR_SECONDS = 60
LOOKUP_TIMEOUT_SECONDS = 5.0
_HOLD_WEIGHT = 0.2  # of the latest message, in the moving average of how long one is held
_REMEMBERED = 10_000  # messages whose deferrals are remembered, most recent first


@dataclass(frozen=True, slots=True)
class Ticket:
    """An admitted message's places in its projects' shares, given back by `release`."""

    projects: frozenset[str]
    since: float


@dataclass(frozen=True, slots=True)
class Admitted:
    message: QueueMessage
    parsed: ParsedMessage
    ticket: Ticket


@dataclass(frozen=True, slots=True)
class Held:
    """Over its project's cap, waiting here (not in the queue) for a place in its share."""

    message: QueueMessage
    parsed: ParsedMessage
    projects: frozenset[str]


@dataclass(frozen=True, slots=True)
class Deferral:
    message: QueueMessage
    project: str
    seconds: int


class FairShare:
    def __init__(
        self,
        projects: UploadProjects,
        *,
        max_in_flight: int,
        room: int = 0,
        clock: Callable[[], float] = time.monotonic,
        random_fraction: Callable[[], float] = random.random,
    ) -> None:
        self._projects = projects
        self._cap = max_in_flight
        self._clock = clock
        self._random = random_fraction
        self._in_flight: Counter[str] = Counter()
        self._asleep: dict[str, list[float]] = {}  # per project: when its deferred ones wake
        self._hold_seconds = 1.0
        self._deferrals: OrderedDict[str, int] = OrderedDict()
        self._room_size = room
        self._room: deque[Held] = deque()

    def in_flight(self, project: str) -> int:
        return self._in_flight[project]

    @property
    def held(self) -> int:
        return len(self._room)

    async def sort(
        self, batch: Sequence[tuple[QueueMessage, ParsedMessage]]
    ) -> tuple[list[Admitted], list[Held], list[Deferral]]:
        """Admit, in order, what the projects' caps allow, hold what the room takes, and
        defer the rest. One read for the whole batch; when it cannot be made, everything is
        admitted (the job meets the same trouble and backs off as usual)."""
        owners = await self._owners({u.image_id for _, parsed in batch for u in parsed.uploads})
        admitted: list[Admitted] = []
        held: list[Held] = []
        deferred: list[Deferral] = []
        for message, parsed in batch:
            projects = frozenset(owners[u.image_id] for u in parsed.uploads if u.image_id in owners)
            full = self._full(projects)
            if not full:
                admitted.append(self._admit(message, parsed, projects))
            elif len(self._room) < self._room_size or self._holds(message.message_id):
                self._release_held(message.message_id)  # redelivered: this copy's receipt counts
                self._room.append(Held(message, parsed, projects))
                held.append(self._room[-1])
            else:
                deferred.append(self._defer(message, full[0]))
        return admitted, held, deferred

    def next_admitted(self) -> Admitted | None:
        """The first message waiting here whose projects all have a place now, admitted."""
        for entry in self._room:
            if not self._full(entry.projects):
                self._room.remove(entry)
                return self._admit(entry.message, entry.parsed, entry.projects)
        return None

    def _holds(self, message_id: str) -> bool:
        return any(entry.message.message_id == message_id for entry in self._room)

    def _release_held(self, message_id: str) -> None:
        for entry in [e for e in self._room if e.message.message_id == message_id]:
            self._room.remove(entry)

    def give_back(self) -> list[Held]:
        """Everything waiting here, for the queue to take back (the processor is stopping)."""
        room, self._room = list(self._room), deque()
        return room

    def _full(self, projects: frozenset[str]) -> list[str]:
        return sorted(p for p in projects if self._in_flight[p] >= self._cap)

    def _admit(
        self, message: QueueMessage, parsed: ParsedMessage, projects: frozenset[str]
    ) -> Admitted:
        self._in_flight.update(projects)
        return Admitted(message, parsed, Ticket(projects, self._clock()))

    def release(self, ticket: Ticket) -> None:
        """The admitted message is done with: deleted, backed off or given back."""
        if not ticket.projects:
            return
        self._hold_seconds += _HOLD_WEIGHT * (self._clock() - ticket.since - self._hold_seconds)
        for project in ticket.projects:
            self._in_flight[project] -= 1
            if self._in_flight[project] <= 0:
                del self._in_flight[project]
            self._waiting(project)  # forgets the project once its deferred ones are back

    def receives(self, message: QueueMessage) -> int:
        """The message's receives, less its deferrals here: what its backoff counts."""
        return max(1, message.receive_count - self._deferrals.get(message.message_id, 0))

    def forget(self, message: QueueMessage) -> None:
        """The message is deleted: it never comes back."""
        self._deferrals.pop(message.message_id, None)

    async def _owners(self, image_ids: set[str]) -> dict[str, str]:
        if not image_ids:
            return {}
        lookup = self._projects.projects_of(image_ids)
        try:
            return await asyncio.wait_for(lookup, LOOKUP_TIMEOUT_SECONDS)
        except Exception as exc:  # noqa: BLE001 - fairness is best effort; the job reports it
            log.warning(
                "cannot tell the uploads' projects: admitting them",
                extra={"error": f"{type(exc).__name__}: {exc}"},
            )
            return {}

    def _defer(self, message: QueueMessage, project: str) -> Deferral:
        backlog = (self._waiting(project) + 1) * self._hold_seconds / self._cap
        floor = min(MAX_FLOOR_SECONDS, max(1, message.receive_count // RECEIVES_PER_FLOOR_SECOND))
        spread = self._random() * SPREAD * backlog
        seconds = math.ceil(min(MAX_DEFER_SECONDS, max(floor, spread)))
        heapq.heappush(self._asleep.setdefault(project, []), self._clock() + seconds)
        self._deferrals[message.message_id] = self._deferrals.pop(message.message_id, 0) + 1
        if len(self._deferrals) > _REMEMBERED:
            self._deferrals.popitem(last=False)
        _DEFERRED.add(1)
        log.debug(
            "project at its share of the uploads in flight: message deferred",
            extra={
                "message_id": message.message_id,
                "project_id": project,
                "receive_count": message.receive_count,
                "retry_in_seconds": seconds,
            },
        )
        return Deferral(message, project, seconds)

    def _waiting(self, project: str) -> int:
        """The project's messages deferred here that have not come back yet."""
        asleep = self._asleep.get(project)
        if asleep is None:
            return 0
        now = self._clock()
        while asleep and asleep[0] <= now:
            heapq.heappop(asleep)
        if not asleep:
            del self._asleep[project]
        return len(asleep)
