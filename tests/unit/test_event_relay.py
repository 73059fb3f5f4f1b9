"""EventRelay with small fakes of the outbox and the topic: what is accepted is marked, what
the topic refuses or a failure interrupts stays for the next batch, and the loop survives."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from imagery.processor.ports import OutboxEvent
from imagery.processor.use_cases.relay_events import EventRelay


def _event(n: int) -> OutboxEvent:
    return OutboxEvent(
        n, "image.ready", "p", f"img{n}", 1, None, {"status": "READY"}, datetime.now(UTC)
    )


@dataclass
class _Batch:
    events: Sequence[OutboxEvent]
    marked: set[int]

    async def mark_published(self, ids: Collection[int]) -> None:
        self.marked.update(ids)


@dataclass
class FakeOutbox:
    events: list[OutboxEvent]
    published: set[int] = field(default_factory=set)

    @contextlib.asynccontextmanager
    async def pending(self, limit: int) -> AsyncIterator[_Batch]:
        marked: set[int] = set()
        waiting = [e for e in self.events if e.id not in self.published][:limit]
        yield _Batch(waiting, marked)
        self.published |= marked  # committed only when the batch ends without an error

    async def oldest_pending_age(self) -> float:
        return 0.0


@dataclass
class FakeTopic:
    refuse: set[int] = field(default_factory=set)
    fail_calls: int = 0
    got: list[int] = field(default_factory=list)

    async def publish(self, events: Sequence[OutboxEvent]) -> list[int]:
        if self.fail_calls:
            self.fail_calls -= 1
            raise ConnectionError("topic away")
        accepted = [e.id for e in events if e.id not in self.refuse]
        self.got += accepted
        return accepted


async def test_refused_events_stay_unpublished_for_the_next_batch() -> None:
    outbox = FakeOutbox([_event(n) for n in range(1, 6)])
    topic = FakeTopic(refuse={3})
    relay = EventRelay(outbox, topic, batch=10)
    assert await relay.publish_once() == 4
    assert outbox.published == {1, 2, 4, 5}
    topic.refuse.clear()
    assert await relay.publish_once() == 1
    assert outbox.published == {1, 2, 3, 4, 5}
    assert await relay.publish_once() == 0


async def test_the_loop_outlives_a_failing_topic_and_publishes_everything() -> None:
    outbox = FakeOutbox([_event(n) for n in range(1, 26)])
    topic = FakeTopic(fail_calls=2)
    relay = EventRelay(outbox, topic, batch=10, poll_seconds=0.01, error_pause_seconds=0.01)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    for _ in range(200):
        if len(outbox.published) == 25:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert outbox.published == set(range(1, 26))
    assert sorted(topic.got) == list(range(1, 26))  # failures published nothing half-way
