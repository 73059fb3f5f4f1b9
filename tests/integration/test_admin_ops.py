"""`imagery-admin dlq` and `imagery-admin migrate status|up` as an operator runs them: the
installed command, in a subprocess, against a real Postgres and the local S3/SQS server. The
dead letters are real S3 event notifications: an object written under `uploads/`, its event
taken from the main queue and put into the dead-letter queue, as SQS's redrive policy would."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

import asyncpg
import pytest

from imagery.common.aws.clients import s3_client, sqs_client
from imagery.common.config import AwsSettings
from imagery.common.db.migrate import load_migrations
from imagery.common.ids import new_image_id
from imagery.devstack.aws import AwsResources
from imagery.devstack.fixtures import PostgresServer
from imagery.devstack.procs import free_port
from tests.integration.test_admin_cli import ADMIN, USER, admin, one_line

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient

pytestmark = pytest.mark.integration


# -- dead letters ---------------------------------------------------------------------------


@pytest.fixture
def queues(aws: AwsResources) -> dict[str, str]:
    """The variables the processor reads its queues from, as the command reads them."""
    return {
        "AWS_REGION": aws.region,
        "AWS_ENDPOINT_URL": aws.endpoint_url,
        "S3_BUCKET": aws.bucket,
        "SQS_QUEUE_URL": aws.queue_url,
        "SQS_DLQ_URL": aws.dlq_url,
    }


@pytest.fixture
async def sqs(aws_settings: AwsSettings) -> AsyncIterator[SQSClient]:
    async with sqs_client(aws_settings) as client:
        yield client


async def dead_letters(
    sqs: SQSClient, aws_settings: AwsSettings, aws: AwsResources, *image_ids: str, redrives: int = 0
) -> dict[str, str]:
    """Upload each image's object, and move the S3 event it raises from the main queue to the
    dead-letter queue (with the processor's redrive count, when `redrives`); returns each
    image's message body."""
    async with s3_client(aws_settings) as s3:
        for image_id in image_ids:
            await s3.put_object(Bucket=aws.bucket, Key=f"uploads/{image_id}", Body=b"bytes")
    bodies: dict[str, str] = {}
    async with asyncio.timeout(30):
        while len(bodies) < len(image_ids):
            response = await sqs.receive_message(
                QueueUrl=aws.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            )
            for message in response.get("Messages", []):
                event = json.loads(message["Body"])
                for record in event.get("Records", []):
                    image_id = unquote_plus(record["s3"]["object"]["key"]).removeprefix("uploads/")
                    if redrives:
                        event["imageryRedrives"] = redrives
                    bodies[image_id] = json.dumps(event)
                await sqs.delete_message(
                    QueueUrl=aws.queue_url, ReceiptHandle=message["ReceiptHandle"]
                )
    assert sorted(bodies) == sorted(image_ids)
    for image_id in image_ids:
        await sqs.send_message(QueueUrl=aws.dlq_url, MessageBody=bodies[image_id])
    return bodies


async def depth(sqs: SQSClient, url: str) -> tuple[int, int]:
    """Messages visible, and not visible, in the queue."""
    response = await sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )
    attributes = response["Attributes"]
    return (
        int(attributes["ApproximateNumberOfMessages"]),
        int(attributes["ApproximateNumberOfMessagesNotVisible"]),
    )


async def drain(sqs: SQSClient, url: str) -> list[str]:
    """Every visible message's body, each received (and deleted) once."""
    bodies: list[str] = []
    while True:
        response = await sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        )
        messages = response.get("Messages", [])
        if not messages:
            return bodies
        for message in messages:
            bodies.append(message["Body"])
            await sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


async def record(
    pool: asyncpg.Pool, image_id: str, status: str, failure_reason: str | None = None
) -> None:
    await pool.execute(
        "INSERT INTO image_records (id, status, content_type, file_name, object_key,"
        " failure_reason) VALUES ($1, $2, 'image/png', 'a.png', 'uploads/' || $1, $3)",
        image_id,
        status,
        failure_reason,
    )


async def redrive_events(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return list(
        await pool.fetch(
            "SELECT principal, target, outcome, details FROM audit_events"
            " WHERE action = 'dlq.redrive' ORDER BY id"
        )
    )


def by_image(listed: list[dict[str, Any]]) -> dict[str | None, dict[str, Any]]:
    return {(m["images"][0]["image_id"] if m["images"] else None): m for m in listed}


async def test_dlq_list_shows_each_dead_letter_with_its_image_and_leaves_it_visible(
    database_url: str,
    pool: asyncpg.Pool,
    sqs: SQSClient,
    aws_settings: AwsSettings,
    aws: AwsResources,
    queues: dict[str, str],
) -> None:
    failed, pending, unknown = new_image_id(), new_image_id(), new_image_id()
    await record(pool, failed, "failed", "PROCESSING_TIMEOUT")
    await record(pool, pending, "pending")
    await dead_letters(sqs, aws_settings, aws, failed, pending)
    await dead_letters(sqs, aws_settings, aws, unknown, redrives=3)
    await sqs.send_message(QueueUrl=aws.dlq_url, MessageBody="not an event")

    run = await admin("dlq", "list", "--json", database_url=database_url, **queues)

    assert run.code == 0, run.err
    listed = by_image(run.json())
    assert sorted(listed, key=str) == sorted([failed, pending, unknown, None], key=str)
    image = listed[failed]["images"][0]
    assert image == {
        "image_id": failed,
        "key": f"uploads/{failed}",
        "project_id": "default",
        "status": "failed",
        "failure_reason": "PROCESSING_TIMEOUT",
    }
    assert listed[pending]["images"][0]["status"] == "pending"
    assert listed[unknown]["images"][0]["status"] is None  # no record: deleted, or never made
    assert listed[unknown]["processor_redrives"] == 3
    assert listed[failed]["processor_redrives"] == 0
    assert listed[None]["problem"] == "body is not JSON"
    for message in listed.values():
        assert message["receive_count"] == 1  # this read
        assert message["age_seconds"] is not None and message["age_seconds"] >= 0
        assert message["sent_at"] is not None
    assert await depth(sqs, aws.dlq_url) == (4, 0), "every message read is visible again"

    text = await admin("dlq", "list", database_url=database_url, **queues)
    assert text.code == 0, text.err
    assert "4 message(s) waiting in" in text.out
    failed_line = next(line for line in text.out.splitlines() if failed in line)
    assert "FAILED" in failed_line and "default" in failed_line
    assert "NO RECORD" in next(line for line in text.out.splitlines() if unknown in line)
    assert "3/3" in next(line for line in text.out.splitlines() if unknown in line)
    assert await depth(sqs, aws.dlq_url) == (4, 0)
    assert len(await drain(sqs, aws.dlq_url)) == 4


async def test_dlq_list_counts_what_it_cannot_see(
    database_url: str,
    sqs: SQSClient,
    aws_settings: AwsSettings,
    aws: AwsResources,
    queues: dict[str, str],
) -> None:
    parked, waiting = new_image_id(), new_image_id()
    await dead_letters(sqs, aws_settings, aws, parked)
    # What the processor does to a message that has had its redrives: hidden for hours.
    await sqs.receive_message(QueueUrl=aws.dlq_url, VisibilityTimeout=3600, WaitTimeSeconds=1)
    await dead_letters(sqs, aws_settings, aws, waiting)

    run = await admin("dlq", "list", database_url=database_url, **queues)
    as_json = await admin("dlq", "list", "--json", database_url=database_url, **queues)

    assert run.code == 0, run.err
    assert waiting in run.out and parked not in run.out
    assert "1 more message(s) are invisible" in run.out
    assert as_json.code == 0 and [m["images"][0]["image_id"] for m in as_json.json()] == [waiting]
    assert "1 more message(s) are invisible" in as_json.err


async def test_dlq_list_of_an_empty_queue(database_url: str, queues: dict[str, str]) -> None:
    run = await admin("dlq", "list", database_url=database_url, **queues)
    as_json = await admin("dlq", "list", "--json", database_url=database_url, **queues)
    assert run.code == 0 and "No visible message waits in" in run.out
    assert as_json.code == 0 and as_json.json() == []


async def test_redrive_moves_every_dead_letter_to_the_main_queue_and_empties_the_dlq(
    database_url: str,
    pool: asyncpg.Pool,
    sqs: SQSClient,
    aws_settings: AwsSettings,
    aws: AwsResources,
    queues: dict[str, str],
) -> None:
    ids = [new_image_id() for _ in range(3)]
    for image_id in ids:
        await record(pool, image_id, "pending")
    bodies = await dead_letters(sqs, aws_settings, aws, *ids, redrives=3)

    run = await admin("dlq", "redrive", "--json", database_url=database_url, **queues)

    assert run.code == 0, run.err
    result = run.json()
    assert (result["moved"], result["send_failed"], result["not_deleted"]) == (3, 0, 0)
    assert result["dry_run"] is False
    assert sorted(m["outcome"] for m in result["messages"]) == ["moved"] * 3
    assert "3/3" in run.err, "the progress bar, on stderr"
    assert await depth(sqs, aws.dlq_url) == (0, 0)
    # Unchanged, the processor's count included: one that fails again is parked at once.
    assert sorted(await drain(sqs, aws.queue_url)) == sorted(bodies.values())
    (event,) = await redrive_events(pool)
    details = json.loads(event["details"])
    assert event["principal"] == USER and event["outcome"] == "ok"
    assert event["target"] == f"queues/{aws.dlq_url.rsplit('/', 1)[-1]}"
    assert details["moved"] == 3 and details["images"] == sorted(ids)


async def test_redrive_dry_run_moves_nothing(
    database_url: str,
    pool: asyncpg.Pool,
    sqs: SQSClient,
    aws_settings: AwsSettings,
    aws: AwsResources,
    queues: dict[str, str],
) -> None:
    ids = [new_image_id() for _ in range(2)]
    await dead_letters(sqs, aws_settings, aws, *ids)

    run = await admin("dlq", "redrive", "--dry-run", "--json", database_url=database_url, **queues)
    text = await admin("dlq", "redrive", "--dry-run", database_url=database_url, **queues)

    assert run.code == 0, run.err
    result = run.json()
    assert result["dry_run"] is True and result["selected"] == 2 and result["moved"] == 0
    assert sorted(m["images"][0]["image_id"] for m in result["messages"]) == sorted(ids)
    assert {m["outcome"] for m in result["messages"]} == {"would_move"}
    assert text.code == 0 and "Would send 2 message(s)" in text.out
    assert "Nothing was changed" in text.out
    assert await depth(sqs, aws.queue_url) == (0, 0)
    assert await depth(sqs, aws.dlq_url) == (2, 0), "what it read is visible again"
    assert await redrive_events(pool) == []


async def test_redrive_of_one_image_moves_only_its_message(
    database_url: str,
    pool: asyncpg.Pool,
    sqs: SQSClient,
    aws_settings: AwsSettings,
    aws: AwsResources,
    queues: dict[str, str],
) -> None:
    ids = [new_image_id() for _ in range(3)]
    bodies = await dead_letters(sqs, aws_settings, aws, *ids)

    run = await admin("dlq", "redrive", "--image", ids[1], database_url=database_url, **queues)

    assert run.code == 0, run.err
    assert "Sent 1 message(s)" in run.out and "left 2" in run.out
    assert await drain(sqs, aws.queue_url) == [bodies[ids[1]]]
    assert await depth(sqs, aws.dlq_url) == (2, 0), "the others are visible again"
    left = [
        unquote_plus(json.loads(b)["Records"][0]["s3"]["object"]["key"])
        for b in await drain(sqs, aws.dlq_url)
    ]
    assert sorted(left) == sorted(f"uploads/{i}" for i in (ids[0], ids[2]))
    (event,) = await redrive_events(pool)
    assert json.loads(event["details"])["only_images"] == [ids[1]]


async def test_redrive_stops_at_the_limit(
    database_url: str,
    sqs: SQSClient,
    aws_settings: AwsSettings,
    aws: AwsResources,
    queues: dict[str, str],
) -> None:
    await dead_letters(sqs, aws_settings, aws, *(new_image_id() for _ in range(3)))

    run = await admin(
        "dlq", "redrive", "--limit", "2", "--json", database_url=database_url, **queues
    )

    assert run.code == 0, run.err
    assert run.json()["moved"] == 2
    assert len(await drain(sqs, aws.queue_url)) == 2
    assert await depth(sqs, aws.dlq_url) == (1, 0)


async def test_redrive_of_an_image_no_dead_letter_names_refuses_and_moves_nothing(
    database_url: str,
    pool: asyncpg.Pool,
    sqs: SQSClient,
    aws_settings: AwsSettings,
    aws: AwsResources,
    queues: dict[str, str],
) -> None:
    await dead_letters(sqs, aws_settings, aws, new_image_id())
    absent = new_image_id()

    run = await admin("dlq", "redrive", "--image", absent, database_url=database_url, **queues)

    assert run.code == 1
    assert absent in run.err and "dlq list" in run.err
    assert await depth(sqs, aws.queue_url) == (0, 0)
    assert await depth(sqs, aws.dlq_url) == (1, 0)


async def test_dlq_commands_name_a_missing_setting(
    database_url: str, queues: dict[str, str]
) -> None:
    without_queue = {k: v for k, v in queues.items() if k != "SQS_QUEUE_URL"}
    without_dlq = {k: v for k, v in queues.items() if k != "SQS_DLQ_URL"}
    listing = await admin("dlq", "list", database_url=database_url, **without_dlq)
    redrive = await admin("dlq", "redrive", database_url=database_url, **without_queue)
    bad_image = await admin(
        "dlq", "redrive", "--image", "nope", database_url=database_url, **queues
    )
    assert listing.code == 1 and "SQS_DLQ_URL is not set" in one_line(listing)
    assert redrive.code == 1 and "SQS_QUEUE_URL is not set" in one_line(redrive)
    assert bad_image.code == 2 and "not an image id" in bad_image.err


# -- migrations -----------------------------------------------------------------------------

MIGRATIONS = load_migrations()


@pytest.fixture
async def empty_database(postgres_server: PostgresServer) -> AsyncIterator[str]:
    """A database no migration has run on."""
    dsn = await postgres_server.new_database(migrated=False)
    yield dsn
    await postgres_server.drop_database(dsn)


async def test_migrate_status_of_a_fresh_database_is_pending(empty_database: str) -> None:
    run = await admin("migrate", "status", "--json", database_url=empty_database)
    text = await admin("migrate", "status", database_url=empty_database)

    assert run.code == 3, run.err
    status = run.json()
    assert status["up_to_date"] is False and status["applied"] == []
    assert [m["name"] for m in status["pending"]] == [m.name for m in MIGRATIONS]
    assert text.code == 3
    assert f"{len(MIGRATIONS)} migration(s) pending" in text.out
    assert "0001_initial.sql" in text.out


@pytest.mark.parametrize("command", [("migrate", "up"), ("migrate",)])
async def test_migrate_up_then_status_is_up_to_date(
    empty_database: str, command: tuple[str, ...]
) -> None:
    up = await admin(*command, database_url=empty_database)
    run = await admin("migrate", "status", "--json", database_url=empty_database)
    text = await admin("migrate", "status", database_url=empty_database)

    assert up.code == 0, up.err
    assert f"Applied {len(MIGRATIONS)} migration(s)" in up.out
    assert run.code == 0, run.err
    status = run.json()
    assert status["up_to_date"] is True and status["pending"] == []
    assert [(m["number"], m["name"]) for m in status["applied"]] == [
        (m.version, m.name) for m in MIGRATIONS
    ]
    assert all(m["applied_at"] for m in status["applied"])
    assert text.code == 0 and f"Up to date: {len(MIGRATIONS)} migration(s) applied" in text.out


async def test_migrate_status_wait_returns_once_another_process_applies_them(
    empty_database: str,
) -> None:
    environ = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    waiting = await asyncio.create_subprocess_exec(
        str(ADMIN),
        *("migrate", "status", "--wait", "120", "--json"),
        env={**environ, "DATABASE_URL": empty_database},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert waiting.stderr is not None
    line = await asyncio.wait_for(waiting.stderr.readline(), timeout=60)
    assert b"migration(s) pending" in line, line  # it saw them pending, and waits

    up = await admin("migrate", "up", database_url=empty_database)
    out, err = await asyncio.wait_for(waiting.communicate(), timeout=60)

    assert up.code == 0, up.err
    assert waiting.returncode == 0, err
    assert json.loads(out)["up_to_date"] is True


async def test_migrate_status_wait_gives_up_with_3(empty_database: str) -> None:
    run = await admin("migrate", "status", "--wait", "2", "--json", database_url=empty_database)
    assert run.code == 3
    assert "waiting up to 2 s" in run.err
    assert len(run.json()["pending"]) == len(MIGRATIONS)


async def test_migrate_status_wait_on_a_database_that_never_answers_fails() -> None:
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/imagery"
    run = await admin("migrate", "status", "--wait", "2", database_url=nowhere)
    assert run.code == 1
    assert "does not answer yet" in run.err and "Cannot use the database" in run.err


async def test_migrate_status_refuses_an_applied_migration_that_was_edited(
    database_url: str, pool: asyncpg.Pool
) -> None:
    await pool.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
    run = await admin("migrate", "status", "--wait", "60", "--json", database_url=database_url)
    assert run.code == 1
    assert run.json()["changed"] == [MIGRATIONS[0].name]
    assert "0001" in run.err and "new migration" in run.err
