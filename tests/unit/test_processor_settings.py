from __future__ import annotations

import os

import pytest

from imagery.common.config import ConfigError
from imagery.processor.config import load_settings

BASE = {
    "DATABASE_URL": "postgresql://u@db/imagery",
    "AWS_REGION": "eu-west-1",
    "S3_BUCKET": "images",
    "SQS_QUEUE_URL": "https://sqs.eu-west-1.amazonaws.com/1/uploads",
    "SQS_DLQ_URL": "https://sqs.eu-west-1.amazonaws.com/1/uploads-dlq",
}


def test_one_job_per_core_and_twice_as_many_uploads_in_flight_by_default() -> None:
    settings = load_settings(BASE)
    assert settings.job_slots == (os.cpu_count() or 2)
    assert settings.concurrency == 2 * settings.job_slots


def test_job_slots_and_uploads_in_flight_are_set_separately() -> None:
    settings = load_settings({**BASE, "PROCESSOR_JOB_SLOTS": "3", "PROCESSOR_CONCURRENCY": "5"})
    assert (settings.job_slots, settings.concurrency) == (3, 5)
    assert load_settings({**BASE, "PROCESSOR_JOB_SLOTS": "3"}).concurrency == 6


def test_a_bad_job_slot_count_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="PROCESSOR_JOB_SLOTS"):
        load_settings({**BASE, "PROCESSOR_JOB_SLOTS": "0"})


def test_one_project_may_hold_half_the_uploads_in_flight_by_default() -> None:
    settings = load_settings({**BASE, "PROCESSOR_JOB_SLOTS": "2"})
    assert (settings.concurrency, settings.project_max_in_flight) == (4, 3)
    assert load_settings({**BASE, "PROCESSOR_CONCURRENCY": "5"}).project_max_in_flight == 4
    assert load_settings({**BASE, "PROCESSOR_CONCURRENCY": "1"}).project_max_in_flight == 1


def test_the_project_cap_is_set_or_turned_off_and_never_above_the_uploads_in_flight() -> None:
    chosen = {**BASE, "PROCESSOR_CONCURRENCY": "8", "PROCESSOR_PROJECT_MAX_IN_FLIGHT": "3"}
    assert load_settings(chosen).project_max_in_flight == 3
    off = {**BASE, "PROCESSOR_PROJECT_MAX_IN_FLIGHT": "0"}
    assert load_settings(off).project_max_in_flight is None
    with pytest.raises(ConfigError, match="PROCESSOR_PROJECT_MAX_IN_FLIGHT"):
        load_settings({**chosen, "PROCESSOR_PROJECT_MAX_IN_FLIGHT": "9"})


def test_renders_after_ingest_take_one_job_slot_of_their_own_and_backfills_are_paced() -> None:
    settings = load_settings(BASE)
    assert (settings.render_concurrency, settings.render_poll_seconds) == (1, 0.5)
    assert settings.backfill_per_minute == 600
    chosen = load_settings(
        {
            **BASE,
            "RENDER_CONCURRENCY": "3",
            "RENDER_POLL_SECONDS": "0.2",
            "BACKFILL_PER_MINUTE": "60",
        }
    )
    assert (chosen.render_concurrency, chosen.render_poll_seconds) == (3, 0.2)
    assert chosen.backfill_per_minute == 60


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RENDER_CONCURRENCY", "0"),
        ("RENDER_POLL_SECONDS", "0"),
        ("RENDER_POLL_SECONDS", "soon"),
        ("RENDER_POLL_SECONDS", "nan"),
        ("BACKFILL_PER_MINUTE", "0"),
    ],
)
def test_a_bad_render_setting_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings({**BASE, name: value})


def test_failed_uploads_are_retained_for_a_week_unless_told_otherwise() -> None:
    assert load_settings(BASE).retained_failed_days == 7
    assert load_settings({**BASE, "RETAINED_FAILED_DAYS": "30"}).retained_failed_days == 30
    for bad in ("0", "a week"):
        with pytest.raises(ConfigError, match="RETAINED_FAILED_DAYS"):
            load_settings({**BASE, "RETAINED_FAILED_DAYS": bad})
