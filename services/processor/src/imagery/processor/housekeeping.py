"""The processor's periodic work beside the consumer: sweeps (content deletion, unfinished
uploads, retention, expired request ids, dead letters, the reconciler) every
interval or at their own pace, and the queues' message counts as a gauge,
`imagery.queue.messages{queue, state}`. Every processor reads the counts, but only the one
that `leading()` names reports them, so a sum over pods never counts a queue twice."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from imagery.common.errors import ImageryError
from imagery.processor.ports import QueueCounts

log = logging.getLogger(__name__)

Sweep = tuple[str, Callable[[], Awaitable[object]]]  # (what it sweeps, one pass)


class Every:
    """A sweep that runs at most once per `seconds`: the first time at the first chance when
    `at_start`, else one period after it was made."""

    def __init__(
        self,
        seconds: float,
        work: Callable[[], Awaitable[object]],
        *,
        at_start: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._seconds = seconds
        self._work = work
        self._clock = clock
        self._last: float | None = None if at_start else clock()

    async def __call__(self) -> object:
        now = self._clock()
        # A millisecond of slack: passes come every interval, and the float sum of intervals
        # can land a hair short of `seconds` (then the work would wait a whole pass more).
        if self._last is not None and now - self._last < self._seconds - 0.001:
            return None
        self._last = now
        return await self._work()


class Housekeeping:
    def __init__(
        self,
        sweeps: Sequence[Sweep],
        queues: Mapping[str, QueueCounts],
        *,
        interval_seconds: float,
        depth_interval_seconds: float = 30,
        leading: Callable[[], bool] = lambda: True,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """`queues`: by the name the gauge gives them (`uploads`, `dead_letter`)."""
        self._sweeps = tuple(sweeps)
        self._queues = dict(queues)
        self._interval = interval_seconds
        self._depth_interval = depth_interval_seconds
        self._leading = leading
        self._sleep = sleep
        self._running: set[str] = set()
        self.counts: dict[str, dict[str, int]] = {}  # queue -> state -> messages, last read
        metrics.get_meter(__name__).create_observable_gauge(
            "imagery.queue.messages",
            callbacks=[self._observe_counts],
            description="Messages in each queue by state (visible, in_flight, delayed);"
            " reported by one processor only",
        )

    @property
    def dlq_depth(self) -> int:
        return self.counts.get("dead_letter", {}).get("visible", 0)

    def _observe_counts(self, _: CallbackOptions) -> list[Observation]:
        if not self._leading():
            return []
        return [
            Observation(count, {"queue": queue, "state": state})
            for queue, states in self.counts.items()
            for state, count in states.items()
        ]

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop` is set: a sweep pass every interval (the first after one interval) and
        the queues' counts every `depth_interval_seconds`."""
        await asyncio.gather(
            self._every(self._interval, self.sweep_once, stop, first_now=True),
            self._every(self._depth_interval, self.read_counts, stop, first_now=True),
        )

    async def sweep_once(self) -> None:
        """Every sweep at once, so a long one (the reconciler) holds up none of the others; a
        sweep still running from the last pass is not started again."""
        await asyncio.gather(*(self._sweep(name, sweep) for name, sweep in self._sweeps))

    async def _sweep(self, name: str, sweep: Callable[[], Awaitable[object]]) -> None:
        if name in self._running:
            return
        self._running.add(name)
        try:
            await sweep()
        except Exception as exc:  # noqa: BLE001 - a failed sweep is retried next interval
            log.warning(f"sweep of {name} failed", extra={"error": str(exc)})
        finally:
            self._running.discard(name)

    async def read_counts(self) -> None:
        for name, queue in self._queues.items():
            try:
                self.counts[name] = dict(await queue.approximate_counts())
            except ImageryError as exc:
                log.warning(
                    "cannot read a queue's message counts", extra={"queue": name, "error": str(exc)}
                )

    async def _every(
        self,
        seconds: float,
        work: Callable[[], Awaitable[None]],
        stop: asyncio.Event,
        *,
        first_now: bool,
    ) -> None:
        """Start `work` every `seconds` without waiting for the last one to end (a sweep that
        is still running is skipped by `_sweep`); cancel what still runs at stop."""
        running: set[asyncio.Task[None]] = set()

        def launch() -> None:
            task = asyncio.ensure_future(work())
            running.add(task)
            task.add_done_callback(running.discard)

        try:
            if first_now:
                launch()
            while not stop.is_set():
                pause = asyncio.ensure_future(self._sleep(seconds))
                stopping = asyncio.ensure_future(stop.wait())
                await asyncio.wait({pause, stopping}, return_when=asyncio.FIRST_COMPLETED)
                pause.cancel()
                stopping.cancel()
                if not stop.is_set():
                    launch()
        finally:
            for task in running:
                task.cancel()
            if running:
                await asyncio.wait(running)
