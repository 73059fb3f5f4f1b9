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
