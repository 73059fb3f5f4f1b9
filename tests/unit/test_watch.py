"""The WatchImage hub over a fake store: each watcher gets the current state, then each
change, until READY or FAILED; a notice costs one read shared by every watcher of its image;
a bus that may have missed notices makes the hub read again; watchers past the cap, or past
their project's share of it, are refused; and a stream that ends for any reason leaves nothing
registered."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncGenerator, Callable, Sequence

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from imagery.common.domain import ImageRecord, ImageStatus
from imagery.common.errors import (
    DependencyUnavailable,
    ImageNotFound,
    InvalidImageId,
    QuotaExceeded,
    ServerBusy,
)
from imagery.common.grpc.errors import status_code_for, to_rpc_status
from imagery.common.ids import new_image_id
from imagery.delivery.watch import Key, Watchers, WatchImage, WatchInterrupted
from tests.principals import CALLER, OTHER

PROJECT = CALLER.project_id
WAIT = 5.0  # against waiting forever, never a timing assertion


class FakeStates:
    """An in-memory store behind the ImageStates port that records every read; `hold`
    keeps reads waiting until released, `failing` makes them raise."""

    def __init__(self) -> None:
        self.records: dict[Key, ImageRecord] = {}
        self.reads: list[list[Key]] = []
        self.hold: asyncio.Event | None = None
        self.failing: Exception | None = None

    def put(self, record: ImageRecord) -> ImageRecord:
        self.records[(record.project_id, record.id)] = record
        return record

    def change(self, record: ImageRecord, **fields: object) -> ImageRecord:
        return self.put(dataclasses.replace(record, **fields))  # type: ignore[arg-type]

    async def read_states(self, keys: Sequence[Key]) -> dict[Key, ImageRecord]:
        self.reads.append(list(keys))
        if self.hold is not None:
            await self.hold.wait()
        if self.failing is not None:
            raise self.failing
        return {key: self.records[key] for key in keys if key in self.records}


def record(status: ImageStatus = ImageStatus.PENDING, project: str = PROJECT) -> ImageRecord:
    image_id = new_image_id()
    return ImageRecord(
        image_id, status, "image/png", "a.png", f"uploads/{image_id}", project_id=project
    )


class Bus:
    """What the hub needs of the change bus: whether it listens."""

    def __init__(self) -> None:
        self.connected = True


@pytest.fixture
def states() -> FakeStates:
    return FakeStates()


@pytest.fixture
def bus() -> Bus:
    return Bus()


@pytest.fixture
async def hub(states: FakeStates, bus: Bus) -> AsyncGenerator[Watchers, None]:
    watchers = Watchers(
        states,
        listening=lambda: bus.connected,
        max_watchers=10,
        max_watchers_per_project=10,
        poll_seconds=0.02,
        retry_seconds=0.02,
    )
    watchers.start()
    yield watchers
    await watchers.close()


async def _next(stream: AsyncGenerator[ImageRecord, None]) -> ImageRecord:
    return await asyncio.wait_for(anext(stream), WAIT)


async def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        await asyncio.sleep(0.001)


def _watch(hub: Watchers, image_id: str, caller=CALLER) -> AsyncGenerator[ImageRecord, None]:  # type: ignore[no-untyped-def]
    return WatchImage(hub)(caller, image_id=image_id)


async def test_current_state_then_each_change_until_ready(
    hub: Watchers, states: FakeStates
) -> None:
    image = states.put(record())
    stream = _watch(hub, image.id)
    assert (await _next(stream)).status is ImageStatus.PENDING
    assert hub.watchers == 1

    processing = states.change(image, status=ImageStatus.PROCESSING)
    hub.changed(f"state:{image.id}")
    assert (await _next(stream)).status is ImageStatus.PROCESSING
    states.change(processing, labels={"team": "feed"})
    hub.changed(f"state:{image.id}")
    assert (await _next(stream)).labels == {"team": "feed"}
    states.change(processing, status=ImageStatus.READY, sha256="ab" * 32)
    hub.changed(f"state:{image.id}")
    ready = await _next(stream)
    assert (ready.status, ready.sha256) == (ImageStatus.READY, "ab" * 32)
    with pytest.raises(StopAsyncIteration):
        await _next(stream)
    assert hub.watchers == 0, "the stream ended: its watcher is gone"
    assert hub.project_watchers(PROJECT) == 0


async def test_failed_ends_the_stream_too(hub: Watchers, states: FakeStates) -> None:
    image = states.put(record(ImageStatus.FAILED))
    stream = _watch(hub, image.id)
    assert (await _next(stream)).status is ImageStatus.FAILED
    with pytest.raises(StopAsyncIteration):
        await _next(stream)


async def test_a_notice_costs_one_read_however_many_watch(
    hub: Watchers, states: FakeStates
) -> None:
    image = states.put(record())
    streams = [_watch(hub, image.id) for _ in range(8)]
    for stream in streams:
        assert (await _next(stream)).status is ImageStatus.PENDING
    before = len(states.reads)
    assert before == 1, "the first watcher's read; the others were handed what it read"

    states.change(image, status=ImageStatus.PROCESSING)
    hub.changed(f"state:{image.id}")
    for stream in streams:
        assert (await _next(stream)).status is ImageStatus.PROCESSING
    assert states.reads[before:] == [[(PROJECT, image.id)]]
    for stream in streams:
        await stream.aclose()
    assert hub.watchers == 0


async def test_notices_during_a_read_join_one_more_read(hub: Watchers, states: FakeStates) -> None:
    images = [states.put(record()) for _ in range(3)]
    streams = [_watch(hub, image.id) for image in images]
    for stream in streams:
        await _next(stream)
    before = len(states.reads)
    states.hold = asyncio.Event()
    hub.changed(f"state:{images[0].id}")
    await _until(lambda: len(states.reads) == before + 1, "a read in flight")
    for _ in range(5):  # meanwhile: a burst of notices for all three
        for image in images:
            states.change(image, labels={"n": "1"})
            hub.changed(f"state:{image.id}")
    states.hold.set()
    for stream in streams:
        while (await _next(stream)).labels != {"n": "1"}:
            pass
    assert len(states.reads) == before + 2, "the fifteen notices cost one more read"
    assert sorted(states.reads[-1]) == sorted((PROJECT, i.id) for i in images)


async def test_a_notice_with_nothing_visible_changed_sends_nothing(
    hub: Watchers, states: FakeStates
) -> None:
    image = states.put(record())
    stream = _watch(hub, image.id)
    await _next(stream)
    hub.changed(f"state:{image.id}")  # e.g. a reset, or another project's notice
    await _until(lambda: len(states.reads) == 2, "the second read")
    states.change(image, status=ImageStatus.READY)
    hub.changed(f"state:{image.id}")
    assert (await _next(stream)).status is ImageStatus.READY, "no duplicate PENDING before it"


async def test_notices_for_other_images_cost_nothing(hub: Watchers, states: FakeStates) -> None:
    image = states.put(record())
    stream = _watch(hub, image.id)
    await _next(stream)
    for change in (f"state:{new_image_id()}", f"image:{new_image_id()}", "key:abc", "project:x"):
        hub.changed(change)
    await asyncio.sleep(0.05)
    assert len(states.reads) == 1
    await stream.aclose()


async def test_a_deleted_image_ends_with_not_found(hub: Watchers, states: FakeStates) -> None:
    image = states.put(record())
    streams = [_watch(hub, image.id) for _ in range(2)]
    for stream in streams:
        await _next(stream)
    del states.records[(PROJECT, image.id)]
    hub.changed(f"image:{image.id}")
    for stream in streams:
        with pytest.raises(ImageNotFound):
            await _next(stream)
    assert (hub.watchers, hub.project_watchers(PROJECT)) == (0, 0)


async def test_a_projects_notice_reads_its_images_again(hub: Watchers, states: FakeStates) -> None:
    mine, theirs = states.put(record()), states.put(record(project=OTHER.project_id))
    stream, other = _watch(hub, mine.id), _watch(hub, theirs.id, OTHER)
    await _next(stream)
    await _next(other)
    del states.records[(PROJECT, mine.id)]  # the project was deleted: its images are gone
    hub.changed(f"project:{PROJECT}")
    with pytest.raises(ImageNotFound):
        await _next(stream)
    assert states.reads[-1] == [(PROJECT, mine.id)], "only that project's images were read"
    await other.aclose()


async def test_unknown_other_projects_and_malformed_ids(hub: Watchers, states: FakeStates) -> None:
    theirs = states.put(record(project=OTHER.project_id))
    for image_id in (new_image_id(), theirs.id):
        with pytest.raises(ImageNotFound) as caught:
            await _next(_watch(hub, image_id))
        assert caught.value.metadata == {"image_id": image_id}
    with pytest.raises(InvalidImageId):
        await _next(_watch(hub, "not-an-id"))
    assert hub.watchers == 0


async def test_reset_reads_every_watched_image_again(
    hub: Watchers, states: FakeStates, bus: Bus
) -> None:
    """A READY whose notice was lost (the bus dropped its connection) still arrives."""
    image = states.put(record())
    stream = _watch(hub, image.id)
    await _next(stream)
    states.change(image, status=ImageStatus.READY)  # committed; its notice never arrives
    hub.reset()
    assert (await _next(stream)).status is ImageStatus.READY


async def test_while_the_bus_is_down_watched_images_are_read_again(
    hub: Watchers, states: FakeStates, bus: Bus
) -> None:
    image = states.put(record())
    stream = _watch(hub, image.id)
    await _next(stream)
    bus.connected = False
    hub.reset()  # what the bus does when it loses its connection
    await _until(lambda: len(states.reads) >= 2, "the reset's read")
    states.change(image, status=ImageStatus.PROCESSING)  # no notice, no reset
    assert (await _next(stream)).status is ImageStatus.PROCESSING
    bus.connected = True
    hub.reset()  # and again when it listens
    reads = len(states.reads)
    await asyncio.sleep(0.1)
    assert len(states.reads) <= reads + 1, "listening again: no more polling"
    await stream.aclose()


async def test_with_the_bus_down_a_new_watcher_is_read_not_handed_the_cache(
    hub: Watchers, states: FakeStates, bus: Bus
) -> None:
    image = states.put(record())
    first = _watch(hub, image.id)
    await _next(first)
    bus.connected = False
    states.change(image, status=ImageStatus.PROCESSING)
    second = _watch(hub, image.id)
    assert (await _next(second)).status is ImageStatus.PROCESSING
    await first.aclose()
    await second.aclose()


async def test_watchers_past_the_cap_are_refused_until_one_ends(states: FakeStates) -> None:
    # the project's share is the whole cap (one tenant): a full replica is still SERVER_BUSY
    hub = Watchers(states, listening=lambda: True, max_watchers=2, max_watchers_per_project=2)
    hub.start()
    try:
        image = states.put(record())
        streams = [_watch(hub, image.id) for _ in range(2)]
        for stream in streams:
            await _next(stream)
        with pytest.raises(ServerBusy) as busy:
            await _next(_watch(hub, image.id))
        assert busy.value.reason == "SERVER_BUSY"
        assert busy.value.retry_after is not None and busy.value.retry_after > 0
        assert busy.value.metadata == {"max_watchers": "2"}
        assert status_code_for(busy.value).name == "RESOURCE_EXHAUSTED"
        assert "2 image watchers" in to_rpc_status(busy.value).details
        await streams[0].aclose()
        again = _watch(hub, image.id)
        assert (await _next(again)).status is ImageStatus.PENDING
        await again.aclose()
        await streams[1].aclose()
        assert hub.watchers == 0
    finally:
        await hub.close()


async def test_a_project_past_its_share_is_refused_while_another_still_watches(
    states: FakeStates,
) -> None:
    hub = Watchers(states, listening=lambda: True, max_watchers=10, max_watchers_per_project=2)
    hub.start()
    try:
        mine, theirs = states.put(record()), states.put(record(project=OTHER.project_id))
        streams = [_watch(hub, mine.id) for _ in range(2)]
        for stream in streams:
            await _next(stream)
        with pytest.raises(QuotaExceeded) as refused:
            await _next(_watch(hub, mine.id))
        error = refused.value
        assert error.reason == "QUOTA_EXCEEDED"
        assert error.metadata == {"max_watchers_per_project": "2"}
        assert error.retry_after is not None and error.retry_after > 0
        status = to_rpc_status(error)
        assert status.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert f"Project {PROJECT!r}" in status.details
        sent = status_pb2.Status.FromString(
            dict(status.trailing_metadata)["grpc-status-details-bin"]
        )
        failure, retry = error_details_pb2.QuotaFailure(), error_details_pb2.RetryInfo()
        assert any(d.Unpack(failure) for d in sent.details)
        assert any(d.Unpack(retry) for d in sent.details)
        assert [v.subject for v in failure.violations] == [f"projects/{PROJECT}"]
        assert retry.retry_delay.ToMilliseconds() > 0
        assert (hub.watchers, hub.project_watchers(PROJECT)) == (2, 2), "the refusal holds none"

        other = _watch(hub, theirs.id, OTHER)
        assert (await _next(other)).id == theirs.id, "another project still gets a stream"

        await streams[0].aclose()
        assert hub.project_watchers(PROJECT) == 1
        again = _watch(hub, mine.id)
        assert (await _next(again)).id == mine.id, "a closed stream frees its project's slot"
        for stream in (again, streams[1], other):
            await stream.aclose()
        assert (hub.watchers, hub.project_watchers(PROJECT)) == (0, 0)
        assert hub.project_watchers(OTHER.project_id) == 0
    finally:
        await hub.close()


async def test_a_cancelled_stream_leaves_nothing_registered(
    hub: Watchers, states: FakeStates
) -> None:
    image = states.put(record())
    stream = _watch(hub, image.id)
    await _next(stream)

    async def consume() -> None:
        async for _ in stream:
            pass

    task = asyncio.ensure_future(consume())
    await asyncio.sleep(0.01)  # waiting for the next change
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (hub.watchers, hub.project_watchers(PROJECT)) == (0, 0)
    hub.changed(f"state:{image.id}")
    await asyncio.sleep(0.05)
    assert len(states.reads) == 1, "nobody watches it: no read"


async def test_a_failed_read_ends_new_watchers_and_retries_for_the_others(
    hub: Watchers, states: FakeStates
) -> None:
    image = states.put(record())
    established = _watch(hub, image.id)
    await _next(established)
    states.failing = DependencyUnavailable("Postgres is down.")
    newcomer = _watch(hub, image.id)
    hub.changed(f"state:{image.id}")
    with pytest.raises(DependencyUnavailable):
        await _next(newcomer)
    await _until(lambda: len(states.reads) >= 4, "retries")
    states.change(image, status=ImageStatus.READY)
    states.failing = None
    assert (await _next(established)).status is ImageStatus.READY
    with pytest.raises(StopAsyncIteration):
        await _next(established)
    assert hub.watchers == 0


async def test_closing_ends_every_stream_unavailable_and_refuses_new_ones(
    states: FakeStates,
) -> None:
    hub = Watchers(states, listening=lambda: True, max_watchers=10, max_watchers_per_project=10)
    hub.start()
    image = states.put(record())
    streams = [_watch(hub, image.id) for _ in range(3)]
    for stream in streams:
        await _next(stream)
    waiting = [asyncio.ensure_future(_next(stream)) for stream in streams]
    await hub.close()
    for pending in waiting:
        with pytest.raises(WatchInterrupted) as caught:
            await pending
        assert status_code_for(caught.value).name == "UNAVAILABLE"
    assert (hub.watchers, hub.project_watchers(PROJECT)) == (0, 0)
    with pytest.raises(WatchInterrupted):
        await _next(_watch(hub, image.id))
