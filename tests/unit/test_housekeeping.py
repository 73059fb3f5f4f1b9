"""The processor's periodic work: sweeps at their pace, one failure never stops the others,
dead letters go back only once the dependencies answer."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Sequence

import pytest

from imagery.common.errors import DependencyUnavailable
from imagery.processor.housekeeping import Every, Housekeeping
from imagery.processor.ports import QueueMessage
from imagery.processor.use_cases.redrive_dead_letters import RedriveDeadLetters

pytestmark = pytest.mark.looptime  # virtual loop time: an hour of sweeps takes no real time


class Depth:
    def __init__(self, depth: int = 0) -> None:
        self.depth = depth

    async def approximate_depth(self) -> int:
        return self.depth

    async def approximate_counts(self) -> dict[str, int]:
        return {"visible": self.depth, "in_flight": 1, "delayed": 0}


async def test_sweeps_run_at_start_and_every_interval_and_a_failure_stops_nothing() -> None:
    runs: list[tuple[str, float]] = []
    loop = asyncio.get_running_loop()

    async def fine() -> None:
        runs.append(("fine", loop.time()))

    async def broken() -> None:
        runs.append(("broken", loop.time()))
        raise DependencyUnavailable("S3 is down")

    hourly = Every(3600, fine, clock=loop.time)
    keeping = Housekeeping(
        [("broken", broken), ("fine", fine), ("hourly", hourly)],
        {"dead_letter": Depth(3), "uploads": Depth(5)},
        interval_seconds=60,
    )
    stop = asyncio.Event()
    started = loop.time()
    loop.call_later(7200 + 30, stop.set)
    await keeping.run(stop)
    fine_runs = [t - started for name, t in runs if name == "fine"]
    broken_runs = [t - started for name, t in runs if name == "broken"]
    assert len(fine_runs) == len(broken_runs) + 2, "every pass went on; the hourly one ran twice"
    assert broken_runs[0] < 1, "the first pass runs at start"
    gaps = {round(b - a) for a, b in itertools.pairwise(broken_runs)}
    assert gaps == {60}, "then one pass a minute"
    assert keeping.dlq_depth == 3
    assert keeping.counts["uploads"] == {"visible": 5, "in_flight": 1, "delayed": 0}


async def test_every_waits_a_period_unless_told_to_run_at_start() -> None:
    calls: list[str] = []
    now = [0.0]

    async def work() -> None:
        calls.append("ran")

    later, at_start = (
        Every(10, work, clock=lambda: now[0]),
        Every(10, work, at_start=True, clock=lambda: now[0]),
    )
    await later()
    await at_start()
    assert calls == ["ran"]
    now[0] = 10
    await later()
    await at_start()
    assert calls == ["ran", "ran", "ran"]


class DeadLetters:
    def __init__(self, bodies: list[str]) -> None:
        self.waiting = [QueueMessage(str(i), f"rh{i}", b, 5) for i, b in enumerate(bodies)]
        self.deleted: list[str] = []
        self.parked: list[tuple[str, int]] = []

    async def receive(
        self, *, max_messages: int = 10, wait_seconds: int = 20
    ) -> list[QueueMessage]:
        batch, self.waiting = self.waiting[:max_messages], self.waiting[max_messages:]
        return batch

    async def delete(self, messages: Sequence[QueueMessage]) -> list[QueueMessage]:
        self.deleted += [m.receipt_handle for m in messages]
        return []

    async def change_visibility(self, message: QueueMessage, timeout_seconds: int) -> None:
        self.parked.append((message.body, timeout_seconds))

    async def approximate_depth(self) -> int:
        return len(self.waiting)


class Queue:
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, bodies: Sequence[str]) -> None:
        self.sent += bodies


class Probe:
    def __init__(self, up: bool) -> None:
        self.up = up

    async def check(self) -> None:
        if not self.up:
            raise DependencyUnavailable("Postgres is down")


async def test_dead_letters_go_back_only_once_the_dependencies_answer() -> None:
    dead, queue, probe = DeadLetters([f"event {i}" for i in range(23)]), Queue(), Probe(False)
    redrive = RedriveDeadLetters(dead, queue, probe)
    assert await redrive() == 0, "they would only come straight back"
    assert queue.sent == [] and dead.deleted == []
    probe.up = True
    assert await redrive() == 23
    assert queue.sent == [f"event {i}" for i in range(23)], "sent before deleted, in order"
    assert len(dead.deleted) == 23


async def test_a_dead_letter_goes_back_three_times_then_stays_parked() -> None:
    event = json.dumps({"Records": [{"eventName": "ObjectCreated:Put"}]})
    queue, probe = Queue(), Probe(True)
    for round_ in range(4):
        dead = DeadLetters([event])
        assert await RedriveDeadLetters(dead, queue, probe)() == (1 if round_ < 3 else 0)
        if round_ < 3:
            event = queue.sent[-1]
            assert json.loads(event)["imageryRedrives"] == round_ + 1
        else:
            assert dead.deleted == [] and len(dead.parked) == 1, "left for an operator"
    assert json.loads(queue.sent[0])["Records"] == [{"eventName": "ObjectCreated:Put"}]
