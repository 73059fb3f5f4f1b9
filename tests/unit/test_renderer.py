"""The renderer loop with fakes: never more renders at once than its concurrency, it rides out
a database that does not answer, and at stop it cancels late renders, which give their
claims back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from imagery.common.domain import VariantInfo
from imagery.processor.imaging import Limits, RenderSpec
from imagery.processor.ports import JobResult
from imagery.processor.render_ports import RenderRequest, RenderSource
from imagery.processor.renderer import Renderer
from imagery.processor.use_cases.render_variant import RenderVariant
from tests.fakes import FakeObjects


def _ask(n: int) -> RenderRequest:
    return RenderRequest(f"{n:064x}", 0, "small", "default", "lazy", 1, datetime.now(UTC))


class FakeRequests:
    def __init__(self, asks: Sequence[RenderRequest], *, failures: int = 0) -> None:
        self.asks = list(asks)
        self.failures = failures
        self.released: list[RenderRequest] = []

    async def claim(self, *, stale_after_seconds: float) -> RenderRequest | None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("Postgres is away")
        return self.asks.pop(0) if self.asks else None

    async def source(self, request: RenderRequest) -> RenderSource | None:
        return RenderSource("jpeg", None)

    async def covered(self, request: RenderRequest, version: int) -> bool:
        return False

    async def complete(
        self,
        request: RenderRequest,
        version: int,
        variants: Sequence[VariantInfo],
        wanted: Sequence[tuple[str, str]],
    ) -> bool | None:
        return False

    async def move(self, request: RenderRequest, version: int) -> None:
        pass

    async def drop(self, request: RenderRequest, *, failed: bool) -> None:
        pass

    async def retry_later(
        self, request: RenderRequest, *, after_seconds: float, stale_after_seconds: float
    ) -> None:
        pass

    async def release(self, request: RenderRequest) -> None:
        self.released.append(request)


async def _until(condition: Callable[[], object], seconds: float = 5) -> None:
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110 - the state is the fakes', polled
            await asyncio.sleep(0.005)


async def test_no_more_renders_run_at_once_than_the_concurrency() -> None:
    requests = FakeRequests([_ask(n) for n in range(5)])
    gate, running, most, done = asyncio.Event(), [0], [0], []

    async def render(request: RenderRequest) -> None:
        running[0] += 1
        most[0] = max(most[0], running[0])
        await gate.wait()
        running[0] -= 1
        done.append(request)

    stop = asyncio.Event()
    loop = Renderer(requests, render, concurrency=2, poll_seconds=0.01, stale_after_seconds=300)
    task = asyncio.create_task(loop.run(stop, grace_seconds=1))
    await _until(lambda: running[0] == 2)
    await asyncio.sleep(0.05)
    assert (most[0], len(requests.asks)) == (2, 3), "the other asks wait, unclaimed"
    gate.set()
    await _until(lambda: len(done) == 5)
    stop.set()
    await task
    assert most[0] == 2


async def test_a_database_that_does_not_answer_pauses_the_loop_without_ending_it() -> None:
    requests = FakeRequests([_ask(1)], failures=2)
    done: list[RenderRequest] = []

    async def render(request: RenderRequest) -> None:
        done.append(request)

    stop = asyncio.Event()
    loop = Renderer(
        requests,
        render,
        concurrency=1,
        poll_seconds=0.01,
        stale_after_seconds=300,
        error_pause_seconds=0.01,
    )
    task = asyncio.create_task(loop.run(stop, grace_seconds=1))
    await _until(lambda: done)
    stop.set()
    await task
    assert requests.failures == 0


class HangingJobs:
    async def verify_and_render(
        self, data: bytes, content_type: str, limits: Limits, spec: RenderSpec
    ) -> JobResult:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_at_stop_a_render_past_the_grace_is_cancelled_and_gives_its_claim_back() -> None:
    ask = _ask(7)
    requests = FakeRequests([ask])
    objects = FakeObjects()
    objects.objects[f"originals/{ask.sha256}"] = (b"bytes", "image/jpeg")
    render = RenderVariant(
        requests,
        objects,
        HangingJobs(),
        limits=Limits(),
        spec=RenderSpec(),
        max_original_bytes=1024,
        stale_after_seconds=300,
    )
    stop = asyncio.Event()
    loop = Renderer(requests, render, concurrency=1, poll_seconds=0.01, stale_after_seconds=300)
    task = asyncio.create_task(loop.run(stop, grace_seconds=0.05))
    await _until(lambda: not requests.asks)
    await asyncio.sleep(0.02)
    stop.set()
    await task
    assert requests.released == [ask], "due again at once, for another processor"
