"""The event outbox and its relay on real Postgres and moto's SNS/SQS (issue 19): every
status change and deletion writes its event in its own transaction, whoever makes it; the
relay publishes at least once, and one killed between publishing and marking loses nothing."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import textwrap
from typing import Any

import asyncpg
import boto3
import pytest

from imagery.common.aws.clients import sns_client
from imagery.common.config import AwsSettings
from imagery.common.ids import new_image_id
from imagery.devstack.aws import LOCAL_CREDENTIALS, AwsResources
from imagery.processor.adapters.outbox import PostgresEventOutbox
from imagery.processor.adapters.sns import SnsEventPublisher
from imagery.processor.use_cases.relay_events import EventRelay

_INSERT = """
INSERT INTO image_records (id, status, content_type, file_name, object_key, project_id)
VALUES ($1, 'processing', 'image/png', 'a.png', 'uploads/' || $1, 'default')"""


async def _failed_images(pool: asyncpg.Pool, count: int) -> list[str]:
    ids = [new_image_id() for _ in range(count)]
    for image_id in ids:
        await pool.execute(_INSERT, image_id)
        await pool.execute(
            "UPDATE image_records SET status = 'failed', failure_reason = 'CORRUPT' WHERE id = $1",
            image_id,
        )
    return ids


def _received(aws: AwsResources, within_empty_polls: int = 2) -> list[dict[str, Any]]:
    sqs = boto3.client("sqs", endpoint_url=aws.endpoint_url, region_name=aws.region)
    got: list[dict[str, Any]] = []
    empty = 0
    while empty < within_empty_polls:
        answer = sqs.receive_message(
            QueueUrl=aws.events_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        )
        messages = answer.get("Messages", [])
        empty = 0 if messages else empty + 1
        for message in messages:
            got.append(json.loads(message["Body"]))
            sqs.delete_message(
                QueueUrl=aws.events_queue_url, ReceiptHandle=message["ReceiptHandle"]
            )
    return got


async def test_each_change_writes_one_event_with_the_image_sequence(pool: asyncpg.Pool) -> None:
    image_id = new_image_id()
    await pool.execute(_INSERT, image_id)
    await pool.execute('UPDATE image_records SET labels = \'{"a": "b"}\' WHERE id = $1', image_id)
    await pool.execute(
        "UPDATE image_records SET status = 'failed', failure_reason = 'CORRUPT' WHERE id = $1",
        image_id,
    )
    # A reprocess takes it back to pending, and it ends again: a second terminal event.
    await pool.execute(
        "UPDATE image_records SET status = 'pending', failure_reason = NULL WHERE id = $1",
        image_id,
    )
    await pool.execute(
        "UPDATE image_records SET status = 'failed', failure_reason = 'EMPTY' WHERE id = $1",
        image_id,
    )
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("DELETE FROM image_records WHERE id = $1", image_id)
    # A change rolled back writes nothing.
    other = new_image_id()
    await pool.execute(_INSERT, other)
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute("UPDATE image_records SET status = 'failed' WHERE id = $1", other)

    rows = await pool.fetch(
        "SELECT type, image_id, sequence, payload::text FROM event_outbox ORDER BY id"
    )
    assert [(r["type"], r["image_id"], r["sequence"]) for r in rows] == [
        ("image.failed", image_id, 1),
        ("image.failed", image_id, 2),
        ("image.deleted", image_id, 3),
    ]
    payloads = [json.loads(r["payload"]) for r in rows]
    assert [p["failure_reason"] for p in payloads[:2]] == ["CORRUPT", "EMPTY"]
    assert payloads[0]["labels"] == {"a": "b"} and payloads[2]["status"] == "DELETED"


async def test_relay_publishes_each_event_and_marks_it(
    pool: asyncpg.Pool, aws: AwsResources, aws_settings: AwsSettings
) -> None:
    ids = await _failed_images(pool, 23)
    async with sns_client(aws_settings) as sns:
        relay = EventRelay(
            PostgresEventOutbox(pool), SnsEventPublisher(sns, aws.events_topic_arn), batch=10
        )
        assert [await relay.publish_once() for _ in range(4)] == [10, 10, 3, 0]
    events = _received(aws)
    assert sorted(e["data"]["image_id"] for e in events) == sorted(ids)
    assert await pool.fetchval("SELECT count(*) FROM event_outbox WHERE published_at IS NULL") == 0


_KILLED_RELAY = textwrap.dedent(
    """
    import asyncio, sys
    import asyncpg
    from imagery.common.aws.clients import sns_client
    from imagery.common.config import AwsSettings
    from imagery.processor.adapters.outbox import PostgresEventOutbox
    from imagery.processor.adapters.sns import SnsEventPublisher
    from imagery.processor.use_cases.relay_events import EventRelay

    class PublishThenHang:
        def __init__(self, inner):
            self.inner = inner

        async def publish(self, events):
            accepted = await self.inner.publish(events)
            print("published", len(accepted), flush=True)
            await asyncio.sleep(3600)  # killed here: published, never marked

    async def main(dsn, endpoint, region, topic):
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
        settings = AwsSettings(region=region, endpoint_url=endpoint, bucket="unused")
        async with sns_client(settings) as sns:
            relay = EventRelay(
                PostgresEventOutbox(pool), PublishThenHang(SnsEventPublisher(sns, topic))
            )
            await relay.publish_once()

    asyncio.run(main(*sys.argv[1:]))
    """
)


async def test_a_relay_killed_between_publish_and_mark_loses_nothing(
    pool: asyncpg.Pool,
    database_url: str,
    aws: AwsResources,
    aws_settings: AwsSettings,
) -> None:
    ids = await _failed_images(pool, 5)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _KILLED_RELAY,
        database_url,
        aws.endpoint_url,
        aws.region,
        aws.events_topic_arn,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, **LOCAL_CREDENTIALS},
    )
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 60)
        assert line.split() == [b"published", b"5"]
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()
    assert len(_received(aws)) == 5  # out on the topic ...
    # ... and, the relay dead before marking, still unpublished in the outbox.
    for _ in range(50):  # Postgres ends the dead client's transaction when its socket closes
        unpublished = await pool.fetchval(
            "SELECT count(*) FROM event_outbox WHERE published_at IS NULL"
        )
        locked = await pool.fetch("SELECT id FROM event_outbox FOR UPDATE SKIP LOCKED")
        if len(locked) == 5:
            break
        await asyncio.sleep(0.1)
    assert unpublished == 5

    async with sns_client(aws_settings) as sns:
        relay = EventRelay(PostgresEventOutbox(pool), SnsEventPublisher(sns, aws.events_topic_arn))
        assert await relay.publish_once() == 5
    again = _received(aws)
    assert sorted(e["data"]["image_id"] for e in again) == sorted(ids)  # at least once
    assert await pool.fetchval("SELECT count(*) FROM event_outbox WHERE published_at IS NULL") == 0
