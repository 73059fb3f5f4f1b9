"""The consumer's decisions about messages, with a fake queue and a scripted processor."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import pytest

from imagery.common.errors import DependencyUnavailable
from imagery.processor.consumer import Consumer
from imagery.processor.ports import QueueMessage
from imagery.processor.use_cases.process_upload import Outcome, Result

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
