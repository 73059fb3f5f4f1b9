"""The renderer beside the consumer: claims render asks (`render_requests`) and answers each
with `RenderVariant`, at most `concurrency` at once, so renders hold only the job slots of
their own lane and uploads never wait for them. Polls every `poll_seconds` while there is
nothing to do, claims again at once while there is.

At stop it claims nothing more, gives the renders in flight `grace_seconds` to finish, then
cancels them: a cancelled render gives its claim back, due again at once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from imagery.processor.render_ports import RenderRequest, RenderRequests

log = logging.getLogger(__name__)


class Renderer:
    def __init__(
        self,
        requests: RenderRequests,
        render: Callable[[RenderRequest], Awaitable[object]],
        *,
        concurrency: int,
        poll_seconds: float,
        stale_after_seconds: float,
        error_pause_seconds: float = 5.0,
    ) -> None:
        self._requests = requests
        self._render = render
        self._concurrency = max(1, concurrency)
        self._poll = poll_seconds
        self._stale_after = stale_after_seconds
        self._error_pause = error_pause_seconds
        self._running: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event, *, grace_seconds: float) -> None:
        try:
            while not stop.is_set():
                if len(self._running) >= self._concurrency:
                    await _one_done_or_stop(stop, self._running)
                    continue
                pause = await self._claim_one()
                if pause:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), pause)
        finally:
            await self._wind_down(grace_seconds)

    async def _claim_one(self) -> float:
        """Start one render; how long to wait before the next claim (0: at once)."""
        try:
            request = await self._requests.claim(stale_after_seconds=self._stale_after)
        except Exception as exc:  # noqa: BLE001 - Postgres away: try again after a pause
            log.warning("cannot claim render asks", extra={"error": f"{type(exc).__name__}: {exc}"})
            return self._error_pause
        if request is None:
            return self._poll
        task = asyncio.create_task(self._answer(request))
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return 0

    async def _answer(self, request: RenderRequest) -> None:
        try:
            await self._render(request)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug: the claim goes stale and the ask is retaken
            log.exception("render ask failed", extra={"sha256": request.sha256})

    async def _wind_down(self, grace_seconds: float) -> None:
        running = set(self._running)
        if not running:
            return
        _, late = await asyncio.wait(running, timeout=grace_seconds)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)
            log.info("renders cancelled at shutdown", extra={"renders": len(late)})


async def _one_done_or_stop(stop: asyncio.Event, running: set[asyncio.Task[None]]) -> None:
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({stopping, *running}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
