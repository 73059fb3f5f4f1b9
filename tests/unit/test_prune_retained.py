"""The retention sweep with a fake store: each table batch by batch until a short batch, one
failing table never stops the others, no retention under a day, and the settings."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from imagery.common.config import ConfigError
from imagery.common.errors import DependencyUnavailable
from imagery.processor.config import load_settings
from imagery.processor.ports import RetentionRule
from imagery.processor.use_cases.prune_retained import PruneRetained

BASE = {
    "DATABASE_URL": "postgresql://u@db/imagery",
    "AWS_REGION": "eu-west-1",
    "S3_BUCKET": "images",
    "SQS_QUEUE_URL": "https://sqs.eu-west-1.amazonaws.com/1/uploads",
    "SQS_DLQ_URL": "https://sqs.eu-west-1.amazonaws.com/1/uploads-dlq",
}


class FakeRetention:
    """Tables of rows past their retention (how many), pruned `limit` at a time."""

    def __init__(self, due: dict[str, int], *, broken: frozenset[str] = frozenset()) -> None:
        self.due = dict(due)
        self.broken = broken
        self.calls: list[tuple[str, int, int]] = []
        self.sizes = {"audit_events": 7}

    async def prune(self, table: str, *, days: int, limit: int) -> int:
        self.calls.append((table, days, limit))
        if table in self.broken:
            raise DependencyUnavailable("Postgres is not answering.")
        gone = min(limit, self.due[table])
        self.due[table] -= gone
        return gone

    async def row_estimates(self) -> dict[str, int]:
        return dict(self.sizes)


READER = InMemoryMetricReader()


@pytest.fixture
def provider() -> Iterator[MeterProvider]:
    global READER
    READER = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[READER])
    yield provider
    provider.shutdown()


async def test_each_table_is_pruned_batch_by_batch_until_a_batch_is_short(
    provider: MeterProvider,
) -> None:
    store = FakeRetention({"audit_events": 5, "admin_jobs": 4})
    rules = [RetentionRule("audit_events", 400), RetentionRule("admin_jobs", 90)]
    sweep = PruneRetained(store, rules, batch=2, meter=provider.get_meter("test"))

    assert await sweep() == {"audit_events": 5, "admin_jobs": 4}
    assert store.calls == [
        *[("audit_events", 400, 2)] * 3,
        *[("admin_jobs", 90, 2)] * 3,  # a full batch may be the last: one more finds none
    ]
    assert sweep.sizes == {"audit_events": 7}


async def test_a_table_that_fails_leaves_the_others_pruned_and_the_sizes_read(
    provider: MeterProvider,
) -> None:
    store = FakeRetention({"admin_jobs": 1}, broken=frozenset({"audit_events"}))
    rules = [RetentionRule("audit_events", 400), RetentionRule("admin_jobs", 90)]
    sweep = PruneRetained(store, rules, meter=provider.get_meter("test"))

    assert await sweep() == {"admin_jobs": 1}
    assert sweep.sizes == {"audit_events": 7}
    data = READER.get_metrics_data()
    assert data is not None
    failures = {
        dict(point.attributes or {})["table"]: getattr(point, "value", None)
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "imagery.retention.prune_failures"
        for point in metric.data.data_points
    }
    assert failures == {"audit_events": 1}, "counted, for the alert"


def test_a_retention_under_a_day_is_refused(provider: MeterProvider) -> None:
    with pytest.raises(ValueError, match="audit_events"):
        PruneRetained(
            FakeRetention({}), [RetentionRule("audit_events", 0)], meter=provider.get_meter("t")
        )


def test_retention_settings_have_defaults_and_are_at_least_a_day() -> None:
    settings = load_settings(BASE)
    assert (
        settings.retention_audit_days,
        settings.retention_deletion_feed_days,
        settings.retention_failed_days,
        settings.retention_admin_jobs_days,
    ) == (400, 1, 30, 90)
    assert load_settings({**BASE, "RETENTION_FAILED_DAYS": "7"}).retention_failed_days == 7
    for name in (
        "RETENTION_AUDIT_DAYS",
        "RETENTION_DELETION_FEED_DAYS",
        "RETENTION_FAILED_DAYS",
        "RETENTION_ADMIN_JOBS_DAYS",
    ):
        with pytest.raises(ConfigError, match=name):
            load_settings({**BASE, name: "0"})
