"""The consumer's decisions about messages, with a fake queue and a scripted processor."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from imagery.common.errors import DependencyUnavailable
from imagery.common.upload_events import parse_message
from imagery.processor.consumer import Consumer, ConsumerState
from imagery.processor.fairness import FairShare
from imagery.processor.ports import QueueMessage, RetryLater
from imagery.processor.use_cases.process_upload import Outcome, Result
from tests.fairness_fakes import FakeUploadProjects, RedeliveringQueue, image_id, upload_event

# Virtual loop time: sleeps, timeouts and call_later take no real time.
pytestmark = pytest.mark.looptime

BUCKET = "bucket"
IMAGE_ID = "01ARZ3NDEKTSV4RRFFQ69G5FAV"


def _message(body: str, receive_count: int = 1) -> QueueMessage:
    return QueueMessage(
        message_id=body[:10],
        receipt_handle=f"rh-{body[:10]}",
        body=body,
        receive_count=receive_count,
    )


def _event(image_id: str = IMAGE_ID) -> str:
    return json.dumps(
        {
            "Records": [
                {
                    "eventName": "ObjectCreated:Put",
                    "s3": {"bucket": {"name": BUCKET}, "object": {"key": f"uploads/{image_id}"}},
                }
            ]
        }
    )


class FakeQueue:
    def __init__(self, messages: list[QueueMessage]) -> None:
        self.waiting = list(messages)
        self.deleted: list[str] = []
        self.visibility: list[tuple[str, int]] = []

    async def receive(
        self, *, max_messages: int = 10, wait_seconds: int = 20
    ) -> list[QueueMessage]:
        if not self.waiting:
            await asyncio.sleep(0.01)
            return []
        batch, self.waiting = self.waiting[:max_messages], self.waiting[max_messages:]
        return batch

    async def delete(self, messages: Sequence[QueueMessage]) -> list[QueueMessage]:
        self.deleted += [m.receipt_handle for m in messages]
        return []

    async def change_visibility(self, message: QueueMessage, timeout_seconds: int) -> None:
        self.visibility.append((message.receipt_handle, timeout_seconds))


class Scripted:
    def __init__(self, result: Result | Exception, delay: float = 0.0) -> None:
        self.result, self.delay, self.calls = result, delay, 0

    async def __call__(self, image_id: str, key: str) -> Result:
        self.calls += 1
        await asyncio.sleep(self.delay)
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


async def _consume(
    queue: FakeQueue, process: Any, *, seconds: float, visibility: int = 60, grace: float = 5
) -> None:
    consumer = Consumer(
        queue,
        process,
        bucket=BUCKET,
        concurrency=2,
        visibility_timeout=visibility,
        retry_base_seconds=5,
        wait_seconds=0,
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(seconds, stop.set)
    await consumer.run(stop, grace_seconds=grace)


async def test_a_finished_upload_deletes_its_message() -> None:
    queue = FakeQueue([_message(_event())])
    await _consume(queue, Scripted(Result(Outcome.READY)), seconds=0.2)
    assert queue.deleted == ["rh-" + _event()[:10]]


async def test_noise_is_deleted_without_processing() -> None:
    queue = FakeQueue(
        [
            _message("not json"),
            _message(json.dumps({"Event": "s3:TestEvent"})),
            _message(_event("x")),
        ]
    )
    process = Scripted(Result(Outcome.READY))
    await _consume(queue, process, seconds=0.2)
    assert len(queue.deleted) == 3 and process.calls == 0


@pytest.mark.parametrize(
    "error", [DependencyUnavailable("S3 down"), ConnectionResetError(), KeyError("bug")]
)
async def test_failures_keep_the_message_and_back_off(error: Exception) -> None:
    queue = FakeQueue([_message(_event(), receive_count=3)])
    await _consume(queue, Scripted(error), seconds=0.2)
    assert queue.deleted == []
    assert queue.visibility == [("rh-" + _event()[:10], 20)], "5 s doubled per earlier receive"


async def test_a_busy_record_comes_back_later_rather_than_being_deleted() -> None:
    queue = FakeQueue([_message(_event())])
    await _consume(queue, Scripted(Result(Outcome.BUSY)), seconds=0.2)
    assert queue.deleted == [] and queue.visibility == [("rh-" + _event()[:10], 5)]


async def test_long_jobs_keep_their_message_invisible() -> None:
    queue = FakeQueue([_message(_event())])
    await _consume(queue, Scripted(Result(Outcome.READY), delay=2.5), seconds=0.1, visibility=2)
    extensions = [v for v in queue.visibility if v[1] == 2]
    assert len(extensions) >= 2, "extended every half visibility timeout while running"
    assert queue.deleted == ["rh-" + _event()[:10]], "the stop waited for the job within the grace"


async def test_stopping_releases_what_the_grace_period_cannot_finish() -> None:
    queue = FakeQueue([_message(_event())])
    await _consume(queue, Scripted(Result(Outcome.READY), delay=30), seconds=0.1, grace=0.2)
    assert queue.deleted == []
    assert queue.visibility[-1] == ("rh-" + _event()[:10], 0), (
        "visible again at once for another worker"
    )


class FlakyProbe:
    def __init__(self, failures: int) -> None:
        self.failures, self.calls = failures, 0

    async def check(self) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise DependencyUnavailable("Postgres is down")


async def test_an_outage_pauses_receiving_until_the_dependencies_answer() -> None:
    first, second = _message(_event()), _message(_event("01ARZ3NDEKTSV4RRFFQ69G5FAW"))
    queue = FakeQueue([first, second])
    probe = FlakyProbe(failures=2)
    calls: list[str] = []

    async def process(image_id: str, key: str) -> Result:
        calls.append(image_id)
        if len(calls) == 1:
            raise DependencyUnavailable("Postgres is down")
        return Result(Outcome.READY)

    consumer = Consumer(
        queue,
        process,
        bucket=BUCKET,
        concurrency=1,
        visibility_timeout=60,
        wait_seconds=0,
        probe=probe,
    )
    receives_while_paused = 0
    receive = queue.receive

    async def watched_receive(**kwargs: Any) -> list[QueueMessage]:
        nonlocal receives_while_paused
        receives_while_paused += not consumer.receiving
        return await receive(**kwargs)

    queue.receive = watched_receive  # type: ignore[method-assign]
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(60, stop.set)
    await consumer.run(stop, grace_seconds=1)
    assert receives_while_paused == 0, "nothing received while a dependency was down"
    assert probe.calls == 3, "probed until it answered"
    assert calls == [IMAGE_ID, "01ARZ3NDEKTSV4RRFFQ69G5FAW"], "then consumed again"
    assert queue.deleted == [second.receipt_handle]
    assert queue.visibility[0] == (first.receipt_handle, 5), "the failed one comes back later"


# --- each project's fair share ------------------------------------------------------------


class Jobs:
    """A processor whose every job takes `seconds` (loop time) and ends READY, or raises
    `errors[image_id]`; records when each upload finished."""

    def __init__(self, seconds: float, errors: dict[str, Exception] | None = None) -> None:
        self.seconds = seconds
        self.errors = errors or {}
        self.started: list[str] = []
        self.finished: list[str] = []
        self.failed: list[str] = []

    async def __call__(self, image_id: str, key: str) -> Result:
        self.started.append(image_id)
        await asyncio.sleep(self.seconds)
        if image_id in self.errors:
            self.failed.append(image_id)
            raise self.errors[image_id]
        self.finished.append(image_id)
        return Result(Outcome.READY)


def _fair_consumer(
    queue: RedeliveringQueue,
    process: Any,
    projects: FakeUploadProjects,
    *,
    cap: int | None,
    concurrency: int = 4,
    room: int = 0,
) -> Consumer:
    loop = asyncio.get_running_loop()
    fair = None
    if cap is not None:
        fair = FairShare(
            projects, max_in_flight=cap, room=room, clock=loop.time, random_fraction=_seeded()
        )
    return Consumer(
        queue,
        process,
        bucket=BUCKET,
        concurrency=concurrency,
        visibility_timeout=60,
        retry_base_seconds=5,
        wait_seconds=0,
        fair_share=fair,
    )


def _seeded() -> Callable[[], float]:
    return random.Random(7).random


async def _run_until(consumer: Consumer, done: Callable[[], bool], *, within: float) -> None:
    stop = asyncio.Event()

    async def watch() -> None:
        for _ in range(round(within * 10)):  # looked at every tenth of a (virtual) second
            if done():
                break
            await asyncio.sleep(0.1)
        stop.set()

    watcher = asyncio.create_task(watch())
    await consumer.run(stop, grace_seconds=5)
    await watcher


def _burst(queue: RedeliveringQueue, project: str, numbers: range) -> dict[str, str]:
    owners = {}
    for n in numbers:
        queue.send(f"{project}{n}", upload_event(BUCKET, image_id(n)))
        owners[image_id(n)] = project
    return owners


@pytest.mark.parametrize(("cap", "room", "fair"), [(2, 0, True), (2, 8, True), (None, 0, False)])
async def test_one_project_s_burst_does_not_hold_up_another_s_upload(
    cap: int | None, room: int, fair: bool
) -> None:
    queue = RedeliveringQueue()
    owners = {**_burst(queue, "a", range(50)), **_burst(queue, "b", range(50, 51))}
    process = Jobs(seconds=1)
    consumer = _fair_consumer(queue, process, FakeUploadProjects(owners), cap=cap, room=room)
    await _run_until(consumer, lambda: len(queue.deleted) == 51, within=600)

    assert sorted(process.finished) == sorted(owners), "every upload processed, once"
    assert sorted(queue.deleted) == sorted(f"{owners[i]}{int(i[-4:])}" for i in owners)
    before_b = process.finished.index(image_id(50))
    if fair:
        assert before_b < 9, f"B was ready after {before_b} of A's uploads"
        receives = queue.receive_counts()
        assert max(receives.values()) <= 10, f"A's messages did not spin: {receives}"
    else:
        assert before_b >= 40, "without a cap the burst goes first (the test can fail)"


async def test_a_deferral_takes_no_slot_and_spends_no_attempt_of_the_upload() -> None:
    queue = RedeliveringQueue()
    owners = {**_burst(queue, "a", range(2)), **_burst(queue, "b", range(2, 3))}
    process = Jobs(seconds=30)
    consumer = _fair_consumer(queue, process, FakeUploadProjects(owners), cap=1, concurrency=2)
    await _run_until(consumer, lambda: len(process.started) == 2, within=5)

    assert process.started == [image_id(0), image_id(2)], "B runs beside A's first, at once"
    deferred = [seconds for message_id, seconds in queue.visibility if message_id == "a1"]
    assert deferred and all(1 <= s <= 900 for s in deferred), queue.visibility
    assert "a1" not in queue.deleted and image_id(1) not in process.started


async def test_deferrals_are_not_counted_by_the_backoff_of_a_later_failure() -> None:
    queue = RedeliveringQueue()
    owners = _burst(queue, "a", range(2))
    process = Jobs(seconds=30, errors={image_id(1): RetryLater("the kernel killed the job")})
    consumer = _fair_consumer(queue, process, FakeUploadProjects(owners), cap=1)
    await _run_until(consumer, lambda: image_id(1) in process.failed, within=120)

    receives = queue.receive_counts()["a1"]
    assert receives > 2, "deferred while the first job ran"
    failed = [seconds for message_id, seconds in queue.visibility if message_id == "a1"][-1]
    assert failed == 5, "backed off as after its first receive, not its last"


async def test_past_a_deferred_burst_full_batches_are_received_and_wait_for_a_slot() -> None:
    queue = RedeliveringQueue()
    owners = {
        **_burst(queue, "a", range(30)),
        **_burst(queue, "b", range(30, 31)),
        **_burst(queue, "c", range(31, 32)),
    }
    running, most, started = 0, 0, []

    async def process(image_id: str, key: str) -> Result:
        nonlocal running, most
        started.append(image_id)
        running += 1
        most = max(most, running)
        await asyncio.sleep(100)
        running -= 1
        return Result(Outcome.READY)

    consumer = _fair_consumer(queue, process, FakeUploadProjects(owners), cap=1, concurrency=2)
    await _run_until(consumer, lambda: {"b30", "c31"} <= set(queue.deleted), within=400)

    assert queue.asked[:2] == [2, 10], "the free slots, then full batches past the burst"
    assert started[:3] == [image_id(0), image_id(30), image_id(31)], "before the rest of A's"
    kept = [seconds for message_id, seconds in queue.visibility if message_id == "c31"]
    assert kept.count(60) >= 6, "kept from everyone else while it waited, and while it ran"
    assert most == 2, "never more jobs than slots"


async def test_stopping_gives_back_what_still_waits_for_a_slot_without_starting_it() -> None:
    queue = RedeliveringQueue()
    owners = {**_burst(queue, "a", range(2)), **_burst(queue, "b", range(2, 3))}
    owners |= _burst(queue, "c", range(3, 4))  # b2 and c3 are admitted together
    process = Jobs(seconds=100)
    consumer = _fair_consumer(queue, process, FakeUploadProjects(owners), cap=1, concurrency=2)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.call_later(1, stop.set)
    given_back: list[float] = []
    change = queue.change_visibility

    async def noting(message: QueueMessage, seconds: int) -> None:
        if message.message_id == "c3" and seconds == 0:
            given_back.append(loop.time())
        await change(message, seconds)

    queue.change_visibility = noting  # type: ignore[method-assign,assignment]
    started = loop.time()
    await consumer.run(stop, grace_seconds=300)

    assert sorted(process.finished) == [image_id(0), image_id(2)], "the running ones finished"
    assert image_id(3) not in process.started, "not started after the stop"
    assert [v for v in queue.visibility if v[0] == "c3"][-1] == ("c3", 0)
    assert given_back and given_back[0] - started < 2, "given back at the stop, not after jobs"


async def test_the_projects_are_read_once_per_batch_and_other_messages_are_admitted() -> None:
    queue = RedeliveringQueue()
    owners = _burst(queue, "a", range(2))
    queue.send("unknown", upload_event(BUCKET, image_id(9)))  # no record, or a finished one
    queue.send("noise", "not json")
    projects = FakeUploadProjects(owners)
    process = Jobs(seconds=1)
    consumer = _fair_consumer(queue, process, projects, cap=1)
    await _run_until(consumer, lambda: len(queue.deleted) == 4, within=60)

    assert projects.reads[0] == {image_id(0), image_id(1), image_id(9)}, "one read, one batch"
    assert process.started[:2] == [image_id(0), image_id(9)], "unknown: not A's, admitted"
    assert sorted(queue.deleted) == ["a0", "a1", "noise", "unknown"]


async def test_when_the_projects_cannot_be_read_the_uploads_are_admitted() -> None:
    queue = RedeliveringQueue()
    owners = _burst(queue, "a", range(3))
    process = Jobs(seconds=1)
    consumer = _fair_consumer(queue, process, FakeUploadProjects(owners, down=True), cap=1)
    await _run_until(consumer, lambda: len(queue.deleted) == 3, within=60)

    assert process.started == [image_id(n) for n in range(3)], "nothing deferred"
    assert queue.visibility == []


async def test_a_deferral_lasts_a_random_share_of_the_backlog_and_at_least_its_receives() -> None:
    owners = {image_id(n): "a" for n in range(4000)}

    async def deferrals(fraction: float, numbers: range, receive_count: int = 1) -> list[int]:
        share = FairShare(
            FakeUploadProjects(owners),
            max_in_flight=2,
            clock=lambda: 0.0,
            random_fraction=lambda: fraction,
        )
        batch = [
            (
                QueueMessage(f"a{n}", f"rh-a{n}", upload_event(BUCKET, image_id(n)), receive_count),
                parse_message(upload_event(BUCKET, image_id(n)), BUCKET),
            )
            for n in numbers
        ]
        admitted, held, deferred = await share.sort(batch)
        assert len(admitted) == 2 and share.in_flight("a") == 2 and not held
        return [d.seconds for d in deferred]

    # Up to half the backlog's time, at one second per upload and two at a time.
    assert await deferrals(1.0, range(12)) == [1, 1, 1, 1, 2, 2, 2, 2, 3, 3]
    assert await deferrals(0.0, range(12)) == [1] * 10, "a second at least"
    assert await deferrals(0.0, range(3), receive_count=30) == [7], "a second per 4 receives"
    assert await deferrals(0.0, range(3), receive_count=999) == [60], "up to a minute"
    assert max(await deferrals(1.0, range(4000))) == 900, "never longer than 15 minutes"


async def _drain_time(room: int) -> float:
    queue = RedeliveringQueue()
    owners = _burst(queue, "a", range(24))
    process = Jobs(seconds=0.5)
    consumer = _fair_consumer(
        queue, process, FakeUploadProjects(owners), cap=3, concurrency=4, room=room
    )
    started = asyncio.get_running_loop().time()
    await _run_until(consumer, lambda: len(queue.deleted) == 24, within=120)
    assert sorted(process.finished) == sorted(owners), "every upload processed, once"
    return asyncio.get_running_loop().time() - started


async def test_a_project_alone_keeps_its_share_busy_while_its_burst_waits_in_the_room() -> None:
    busy = 24 / 3 * 0.5  # its share of three places never idle
    held = await _drain_time(room=8)
    deferred = await _drain_time(room=0)

    assert held <= busy + 0.5, f"with the room: {held:.1f} s, its share always busy: {busy} s"
    assert deferred >= busy + 1, f"all deferred, the places idle ({deferred:.1f} s; can fail)"


async def test_the_room_holds_what_it_can_and_gives_it_back_at_a_stop() -> None:
    queue = RedeliveringQueue()
    owners = _burst(queue, "a", range(6))
    process = Jobs(seconds=25)
    consumer = _fair_consumer(
        queue, process, FakeUploadProjects(owners), cap=1, concurrency=2, room=2
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(45, stop.set)
    await consumer.run(stop, grace_seconds=300)

    changes = {m: [s for mid, s in queue.visibility if mid == m] for m in ("a1", "a2", "a3")}
    assert process.finished == [image_id(0), image_id(1)], "held, then started as A's place freed"
    assert changes["a1"] == [60] and "a1" in queue.deleted, (
        "never deferred nor received again; its keeper went on with it when it started"
    )
    assert changes["a2"] == [60, 0], "held: kept invisible, then given back at the stop"
    assert 1 <= changes["a3"][0] <= 900, "the room was full: deferred"


async def test_a_redelivered_message_replaces_its_stale_copy_in_the_room() -> None:
    share = FairShare(
        FakeUploadProjects({image_id(n): "a" for n in range(3)}), max_in_flight=1, room=2
    )

    def copy(n: int, receipt: str) -> tuple[QueueMessage, Any]:
        body = upload_event(BUCKET, image_id(n))
        return QueueMessage(f"a{n}", receipt, body, 1), parse_message(body, BUCKET)

    admitted, held, _ = await share.sort([copy(0, "r0"), copy(1, "old")])
    assert len(admitted) == 1 and [h.message.receipt_handle for h in held] == ["old"]
    _, held, deferred = await share.sort([copy(1, "new")])
    assert [h.message.receipt_handle for h in held] == ["new"] and not deferred
    assert share.held == 1, "one entry per message"


class HangingQueue(FakeQueue):
    """Its receive never answers once `hang` is set (a call stuck in the network)."""

    def __init__(self) -> None:
        super().__init__([])
        self.hang = False

    async def receive(
        self, *, max_messages: int = 10, wait_seconds: int = 20
    ) -> list[QueueMessage]:
        if self.hang:
            await asyncio.Event().wait()
        await asyncio.sleep(wait_seconds)  # an empty long poll
        return []


async def test_an_idle_loop_is_running_a_hung_one_stuck_and_a_paused_one_paused() -> None:
    queue = HangingQueue()
    outage = DependencyUnavailable("Postgres is down")

    class Down:
        async def check(self) -> None:
            raise outage

    def consumer_of(queue: FakeQueue) -> Consumer:
        return Consumer(
            queue,
            Scripted(outage),
            bucket=BUCKET,
            concurrency=1,
            visibility_timeout=60,
            wait_seconds=20,
            stall_seconds=30,
            probe=Down(),
            clock=asyncio.get_running_loop().time,
        )

    consumer = consumer_of(queue)
    stop = asyncio.Event()
    running = asyncio.create_task(consumer.run(stop, grace_seconds=1))
    states = []
    for _ in range(10):  # five minutes of empty long polls
        await asyncio.sleep(30)
        states.append(consumer.state())
    assert set(states) == {ConsumerState.RUNNING}, states
    queue.hang = True
    await asyncio.sleep(60)
    assert consumer.state() is ConsumerState.STUCK, "no turn for longer than the stall"
    stop.set()
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running

    paused = consumer_of(FakeQueue([_message(_event())]))
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(3600, stop.set)
    consuming = asyncio.create_task(paused.run(stop, grace_seconds=1))
    await asyncio.sleep(600)
    assert paused.state() is ConsumerState.PAUSED, "an hour-long outage is a pause, not a stall"
    await consuming
