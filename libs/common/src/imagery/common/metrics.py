"""Histogram buckets shared by the services' instruments, given to OpenTelemetry as advice
(`explicit_bucket_boundaries_advisory`), so every exporter and every process uses the same
boundaries and the shipped alerts' thresholds fall on one of them. All durations in seconds,
as the semantic conventions ask."""

from __future__ import annotations

# rpc.server.call.duration: the semantic conventions' recommended boundaries (5 ms .. 10 s);
# the latency SLO's 0.25 s is one of them.
RPC_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)

# Processing (upload to READY, a stage, a render): 0.05 .. 60 s, dense between 1 and 10 s
# where upload-to-ready lives (its p99 alert is at 10 s).
PROCESSING_SECONDS = (
    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
)  # fmt: skip

# How long a message waited in the queue before a processor received it: up to an hour (the
# queue-age alert is at 300 s).
QUEUE_AGE_SECONDS = (
    0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
)  # fmt: skip

# Receives of one message (redelivery), up to the dead-letter queue's maxReceiveCount.
RECEIVE_COUNTS = (1.0, 2.0, 3.0, 5.0, 10.0, 25.0, 100.0, 1000.0)


class BoundedLabel:
    """A label whose values are not ours to bound (project ids are chosen by tenants): the
    first `limit` distinct values a process sees are kept, every later one reads `other`,
    so one process never exports more than `limit + 1` series per metric for it."""

    OTHER = "other"

    def __init__(self, limit: int = 100) -> None:
        self._limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) >= self._limit:
            return self.OTHER
        self._seen.add(value)
        return value
