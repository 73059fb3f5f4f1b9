"""The SQS consumer: long-poll, bounded concurrency, delete only after the outcome is
committed, visibility kept alive for long jobs, backoff for transient trouble, and a
graceful stop that finishes or releases what is in flight.

While Postgres or S3 is unavailable it receives nothing: the first job that meets the outage
pauses receiving, and a probe with growing pauses resumes it once both answer, so no message
spends its receives (and reaches the dead-letter queue) on an outage.

With a `FairShare`, a message whose project already has its share of the uploads in flight is
deferred (see `fairness`): it comes back later, holding no slot and counting as no failure.
Its deferrals are not counted as receives by the backoff. A few such messages wait here
instead, kept invisible, and start as their project's share frees a place.

`state` tells liveness from readiness: the loop turns at least once per long poll, and a job
ends within its limits, so a loop that has not turned for `stall_seconds` is stuck (restart
it); one paused for an outage is not, however long the outage lasts."""

from __future__ import annotations

import asyncio
import enum
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import SpanKind

from imagery.common.errors import DependencyUnavailable, ImageryError
from imagery.common.metrics import QUEUE_AGE_SECONDS, RECEIVE_COUNTS
from imagery.common.upload_events import ParsedMessage, parse_message
from imagery.processor.fairness import Admitted, FairShare, Held, Ticket
from imagery.processor.ports import DependencyProbe, MessageQueue, QueueMessage, RetryLater
from imagery.processor.use_cases.process_upload import ProcessUpload

log = logging.getLogger(__name__)
MAX_BACKOFF_SECONDS = 900
_TRACER = trace.get_tracer(__name__)
_METER = metrics.get_meter(__name__)
_IN_FLIGHT = _METER.create_up_down_counter("imagery.processor.messages.in_flight")
_RECEIVES = _METER.create_histogram(
    "imagery.processor.message.receive_count",
    description="ApproximateReceiveCount, less deferrals, when a message is handled"
    " (redelivery shows here)",
    explicit_bucket_boundaries_advisory=RECEIVE_COUNTS,
)
_AGE = _METER.create_histogram(
    "imagery.processor.message.age",
    unit="s",
    description="How long a message had waited in the queue when first received (SentTimestamp)",
    explicit_bucket_boundaries_advisory=QUEUE_AGE_SECONDS,
)


class ConsumerState(enum.Enum):
    RUNNING = "running"
    PAUSED = "paused"  # on purpose: a dependency is down, receiving waits for the probe
    STUCK = "stuck"  # the loop has not turned for `stall_seconds`: restart the process


_CONSUMERS: weakref.WeakSet[Consumer] = weakref.WeakSet()


def _observe_states(_: CallbackOptions) -> Iterable[Observation]:
    for consumer in list(_CONSUMERS):
        current = consumer.state()
        for state in ConsumerState:
            yield Observation(int(state is current), {"state": state.value})


_METER.create_observable_gauge(
    "imagery.processor.consumer.state",
    callbacks=[_observe_states],
    description="1 for the consumer loop's current state (running, paused, stuck), else 0",
)


class Consumer:
    def __init__(
        self,
        queue: MessageQueue,
        process: ProcessUpload,
        *,
        bucket: str,
        concurrency: int,
        visibility_timeout: int,
        retry_base_seconds: int = 5,
        wait_seconds: int = 20,
        probe: DependencyProbe | None = None,
        probe_max_seconds: float = 30,
        fair_share: FairShare | None = None,
        stall_seconds: float = 180,
        clock: Callable[[], float] = time.perf_counter,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._clock = clock
        self._wall_clock = wall_clock
        self._stall = stall_seconds
        self._beat = clock()  # the last turn of the loop, or the last job to end
        _CONSUMERS.add(self)
        self._sleep = sleep
        self._probe = probe
        self._fair = fair_share
        self._scanning = False  # the last batch had deferrals
        self._draining = False
        self._queued: set[asyncio.Task[None]] = set()  # admitted, waiting for a slot
        self._probe_max = probe_max_seconds
        self._available = asyncio.Event()
        self._available.set()
        self._probing: asyncio.Task[None] | None = None
        self._queue = queue
        self._process = process
        self._bucket = bucket
        self._slots = asyncio.Semaphore(concurrency)
        self._concurrency = concurrency
        self._visibility = visibility_timeout
        self._retry_base = retry_base_seconds
        self._wait_seconds = wait_seconds
        self._tasks: set[asyncio.Task[None]] = set()
        self._keepers: dict[str, asyncio.Task[None]] = {}  # of the messages the room holds

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def state(self) -> ConsumerState:
        if not self._available.is_set():
            return ConsumerState.PAUSED
        if self._clock() - self._beat > self._stall:
            return ConsumerState.STUCK
        return ConsumerState.RUNNING

    async def run(self, stop: asyncio.Event, *, grace_seconds: float) -> None:
        """Consume until `stop` is set, then finish in-flight work within the grace period and
        release (visibility 0, claim given back) whatever is still running."""
        stopping = asyncio.create_task(stop.wait())
        last_poll: asyncio.Task[list[QueueMessage]] | None = None
        try:
            while not stop.is_set():
                self._beat = self._clock()
                await self._wait_for_free_slot(stopping)
                await self._wait_until_available(stopping)
                self._beat = self._clock()  # a pause on purpose ends as a fresh turn
                if stop.is_set():
                    break
                receiving = asyncio.create_task(
                    self._queue.receive(
                        max_messages=self._batch_size(), wait_seconds=self._wait_seconds
                    )
                )
                done, _ = await asyncio.wait(
                    {receiving, stopping}, return_when=asyncio.FIRST_COMPLETED
                )
                if receiving not in done:
                    # Not cancelled: a long poll given up on by the client may still be
                    # answered by SQS, and what it hands to nobody stays invisible for the
                    # visibility timeout. It ends within its wait; its messages go back.
                    last_poll = receiving
                    break
                try:
                    messages = receiving.result()
                except DependencyUnavailable as exc:
                    log.warning("cannot receive from SQS; retrying", extra={"error": str(exc)})
                    pause = asyncio.ensure_future(self._sleep(min(5, self._retry_base or 1)))
                    await asyncio.wait({stopping, pause}, return_when=asyncio.FIRST_COMPLETED)
                    pause.cancel()
                    continue
                await self._dispatch(messages)
        finally:
            stopping.cancel()
            if self._probing is not None:
                self._probing.cancel()
            await asyncio.gather(self._drain(grace_seconds), self._give_back(last_poll))

    async def _give_back(self, poll: asyncio.Task[list[QueueMessage]] | None) -> None:
        """What the last long poll brings after the stop goes back to the queue at once."""
        if poll is None:
            return
        try:
            async with asyncio.timeout(self._wait_seconds + 5):
                messages = await poll
        except (TimeoutError, ImageryError):
            poll.cancel()
            return
        await asyncio.gather(*(self._set_visibility(m, 0) for m in messages))
        if messages:
            log.info("gave back what the last poll received", extra={"messages": len(messages)})

    @property
    def receiving(self) -> bool:
        """False while an outage has paused receiving."""
        return self._available.is_set()

    async def _wait_until_available(self, stopping: asyncio.Task[bool]) -> None:
        if self._available.is_set():
            return
        available = asyncio.ensure_future(self._available.wait())
        await asyncio.wait({available, stopping}, return_when=asyncio.FIRST_COMPLETED)
        available.cancel()

    def _outage(self, exc: Exception) -> None:
        """Pause receiving until the probe finds Postgres and S3 answering again."""
        if self._probe is None or not self._available.is_set():
            return
        log.warning("a dependency is unavailable: receiving paused", extra={"error": str(exc)})
        self._available.clear()
        self._probing = asyncio.create_task(self._probe_until_available())

    async def _probe_until_available(self) -> None:
        assert self._probe is not None
        pause = 1.0
        while True:
            await self._sleep(pause)
            try:
                await asyncio.wait_for(self._probe.check(), timeout=self._probe_max)
            except Exception as exc:  # noqa: BLE001 - whatever it is, it is not answering yet
                pause = min(self._probe_max, pause * 2)
                log.warning(
                    "still unavailable",
                    extra={"error": f"{type(exc).__name__}: {exc}", "next_probe_s": pause},
                )
                continue
            log.info("dependencies answer again: receiving resumed")
            self._available.set()
            self._promote()
            return

    def _batch_size(self) -> int:
        """What the free slots take; while a burst is being deferred, a full batch, to reach
        the other projects' uploads behind it sooner (those admitted wait for a slot)."""
        if self._scanning:
            return 10
        return max(1, min(10, self._concurrency - len(self._tasks)))

    async def _wait_for_free_slot(self, stopping: asyncio.Task[bool]) -> None:
        while len(self._tasks) >= self._concurrency and not stopping.done():
            await asyncio.wait({stopping, *self._tasks}, return_when=asyncio.FIRST_COMPLETED)

    async def _drain(self, grace_seconds: float) -> None:
        self._draining = True
        for task in self._queued:  # admitted, no slot yet: give them back now, not at the end
            task.cancel()
        held = asyncio.ensure_future(self._give_back_held())  # meanwhile: the grace runs now
        try:
            await self._finish_in_flight(grace_seconds)
        finally:
            await held

    async def _finish_in_flight(self, grace_seconds: float) -> None:
        if not self._tasks:
            return
        log.info(
            "stopping: finishing in-flight jobs",
            extra={"jobs": len(self._tasks), "grace_seconds": grace_seconds},
        )
        timer = asyncio.ensure_future(self._sleep(grace_seconds))
        all_done = asyncio.ensure_future(asyncio.wait(set(self._tasks)))
        await asyncio.wait({timer, all_done}, return_when=asyncio.FIRST_COMPLETED)
        timer.cancel()
        all_done.cancel()
        pending = {task for task in self._tasks if not task.done()}
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
            log.info("released unfinished jobs", extra={"jobs": len(pending)})

    async def _dispatch(self, messages: list[QueueMessage]) -> None:
        """Start a job for each message its project's share admits; defer the others."""
        now = self._wall_clock()
        for message in messages:  # first receives: a redelivery's age is its backoff's
            if message.sent_at is not None and message.receive_count == 1:
                _AGE.record(max(0.0, now - message.sent_at))
        batch = [(message, parse_message(message.body, self._bucket)) for message in messages]
        if self._fair is None:
            admitted = [Admitted(m, parsed, Ticket(frozenset(), 0.0)) for m, parsed in batch]
        else:
            admitted, held, deferred = await self._fair.sort(batch)
            self._scanning = bool(held or deferred)
            for waiting in held:  # a redelivered one replaces its stale copy, keeper and all
                stale = self._keepers.pop(waiting.message.message_id, None)
                if stale is not None:
                    stale.cancel()
                keeper = asyncio.create_task(self._keep_visible(waiting.message))
                self._keepers[waiting.message.message_id] = keeper
            await asyncio.gather(*(self._set_visibility(d.message, d.seconds) for d in deferred))
        for entry in admitted:
            self._start(entry)

    def _start(self, entry: Admitted, keeper: asyncio.Task[None] | None = None) -> None:
        task = asyncio.create_task(self._handle(entry, keeper))
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._beat = self._clock()
        self._tasks.discard(task)
        self._promote()

    def _promote(self) -> None:
        """While a place is free, the first message the room holds whose project has room
        starts, its keeper going on with it (the visibility it last set is what it has
        left). Not while paused for an outage: it would only fail and come back."""
        while (
            self._fair is not None
            and not self._draining
            and self._available.is_set()
            and self.in_flight < self._concurrency
        ):
            entry = self._fair.next_admitted()
            if entry is None:
                return
            self._start(entry, self._keepers.pop(entry.message.message_id, None))

    async def _give_back_held(self) -> None:
        held: list[Held] = [] if self._fair is None else self._fair.give_back()
        for keeper in self._keepers.values():
            keeper.cancel()
        self._keepers.clear()
        await asyncio.gather(*(self._set_visibility(h.message, 0) for h in held))
        if held:
            log.info("gave back the messages waiting for a place", extra={"messages": len(held)})

    async def _handle(self, admitted: Admitted, keeper: asyncio.Task[None] | None = None) -> None:
        _IN_FLIGHT.add(1)
        _RECEIVES.record(self._receives(admitted.message))
        try:
            await self._handle_slot(admitted.message, admitted.parsed, keeper)
        finally:
            _IN_FLIGHT.add(-1)
            if self._fair is not None:
                self._fair.release(admitted.ticket)

    async def _handle_slot(
        self, message: QueueMessage, parsed: ParsedMessage, keeper: asyncio.Task[None] | None
    ) -> None:
        """`keeper`: the one that has kept the message invisible while it waited, if any."""
        keeper = keeper or asyncio.create_task(self._keep_visible(message))
        me = asyncio.current_task()
        try:
            if me is not None:
                self._queued.add(me)
            try:
                await self._slots.acquire()
            finally:
                self._queued.discard(me)
            try:
                if self._draining:  # admitted, but stopping before its turn: give it back
                    await self._set_visibility(message, 0)
                    return
                await self._handle_now(message, parsed)
            finally:
                self._slots.release()
        except asyncio.CancelledError:
            await asyncio.shield(self._set_visibility(message, 0))
            raise
        except Exception as exc:
            delay = self._backoff(self._receives(message))
            transient = isinstance(exc, DependencyUnavailable | RetryLater)
            log.log(
                logging.WARNING if transient else logging.ERROR,
                "message failed; it will be retried"
                if transient
                else "message failed unexpectedly",
                exc_info=not transient,
                extra={
                    "message_id": message.message_id,
                    "receive_count": message.receive_count,
                    "retry_in_seconds": delay,
                    "error": str(exc),
                },
            )
            await self._set_visibility(message, delay)
            if isinstance(exc, DependencyUnavailable):
                self._outage(exc)
        finally:
            keeper.cancel()

    async def _handle_now(self, message: QueueMessage, parsed: ParsedMessage) -> None:
        for problem in parsed.ignored:
            log.warning(
                "ignoring S3 event record", extra={"message_id": message.message_id, "why": problem}
            )
        busy = False
        for upload in parsed.uploads:
            started = self._clock()
            attributes = {
                "image.id": upload.image_id,
                "messaging.system": "aws_sqs",
                "messaging.message.id": message.message_id,
            }
            with _TRACER.start_as_current_span(
                "imagery.process_upload", kind=SpanKind.CONSUMER, attributes=attributes
            ):
                result = await self._process(upload.image_id, upload.key)
                busy |= not result.outcome.done
                log.info(
                    "upload processed",
                    extra={
                        "image_id": upload.image_id,
                        "outcome": result.outcome.value,
                        "failure_reason": result.reason,
                        "receive_count": message.receive_count,
                        "duration_ms": round((self._clock() - started) * 1000, 1),
                        "stages_ms": result.stages_ms,
                        "job_peak_rss_bytes": result.peak_rss_bytes,
                    },
                )
        if busy:  # another worker holds the claim: look again once it should be done
            await self._set_visibility(message, self._backoff(self._receives(message)))
            return
        failed = await self._queue.delete([message])
        if self._fair is not None:
            self._fair.forget(message)
        if failed:
            log.warning(
                "could not delete a processed message; it will be seen again as a duplicate",
                extra={"message_id": message.message_id},
            )

    async def _keep_visible(self, message: QueueMessage) -> None:
        """Extend visibility every half timeout while the job runs."""
        half = max(1.0, self._visibility / 2)
        while True:
            await self._sleep(half)
            await self._set_visibility(message, self._visibility)

    async def _set_visibility(self, message: QueueMessage, seconds: int) -> None:
        try:
            await self._queue.change_visibility(message, seconds)
        except ImageryError as exc:
            log.warning(
                "could not change message visibility",
                extra={"message_id": message.message_id, "error": str(exc)},
            )

    def _receives(self, message: QueueMessage) -> int:
        return message.receive_count if self._fair is None else self._fair.receives(message)

    def _backoff(self, receive_count: int) -> int:
        return int(min(MAX_BACKOFF_SECONDS, self._retry_base * 2 ** max(0, receive_count - 1)))
