"""The event relay beside the consumer: publishes what the outbox holds (image.ready,
image.failed, image.blocked, image.deleted; migration 0026 writes them in the transaction of
the change) to the events topic, then marks them published.

At least once: a batch is held (its rows locked) from the moment it is read until it is
marked, so relays in other processors skip it; a relay that dies between publishing and
marking lets it go, and it is published again. Batches follow each other at once while the
outbox is full, every `poll_seconds` while it is empty, and `error_pause_seconds` after a
failure (the topic or Postgres away): nothing is lost meanwhile, the outbox keeps it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Meter, Observation

from imagery.processor.ports import EventOutbox, EventPublisher

log = logging.getLogger(__name__)
BATCH = 100
AGE_EVERY_SECONDS = 5.0  # how often the oldest waiting event's age is read for the gauge


class EventRelay:
    def __init__(
        self,
        outbox: EventOutbox,
        publisher: EventPublisher,
        *,
        batch: int = BATCH,
        poll_seconds: float = 0.5,
        error_pause_seconds: float = 5.0,
        meter: Meter | None = None,
    ) -> None:
        self._outbox = outbox
        self._publisher = publisher
        self._batch = max(1, batch)
        self._poll = poll_seconds
        self._error_pause = error_pause_seconds
        self._age: float | None = None
        self._age_read_at = -AGE_EVERY_SECONDS
        meter = meter or metrics.get_meter(__name__)
        self._published = meter.create_counter(
            "imagery.events.published",
            unit="{event}",
            description="Image events published to the events topic, by type",
        )
        meter.create_observable_gauge(
            "imagery.events.outbox.age",
            callbacks=[self._observe],
            unit="s",
            description="Age of the oldest image event not yet published (0: none waits)",
        )

    def _observe(self, _: CallbackOptions) -> list[Observation]:
        return [] if self._age is None else [Observation(self._age)]

    async def publish_once(self) -> int:
        """One batch: how many of its events the topic accepted (the others, refused, wait
        for a later batch)."""
        async with self._outbox.pending(self._batch) as pending:
            events = pending.events
            if not events:
                return 0
            accepted = await self._publisher.publish(events)
            await pending.mark_published(accepted)
        kinds: dict[str, int] = {}
        done = set(accepted)
        for event in events:
            if event.id in done:
                kinds[event.type] = kinds.get(event.type, 0) + 1
        for kind, count in kinds.items():
            self._published.add(count, {"type": kind})
        return len(done)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self._read_age()
                published = await self.publish_once()
                # A full batch: more may wait. One the topic partly refused is not retried
                # at once (the refusal is logged with its codes).
                pause = 0.0 if published >= self._batch else self._poll
            except Exception as exc:  # noqa: BLE001 - the topic or Postgres away: pause, retry
                log.warning(
                    "cannot relay image events", extra={"error": f"{type(exc).__name__}: {exc}"}
                )
                pause = self._error_pause
            if pause:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), pause)

    async def _read_age(self) -> None:
        now = time.monotonic()
        if now - self._age_read_at >= AGE_EVERY_SECONDS:
            self._age_read_at = now
            self._age = await self._outbox.oldest_pending_age()
