"""The dead-letter queue as imagery-admin reads it: SQS calls through the services' own client
(`imagery.common.aws.clients`), what each message names, read as the processor reads it
(`imagery.common.upload_events`), and the records of the images it names."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg

from imagery.admin.output import iso
from imagery.common.aws.clients import aws_unavailable
from imagery.common.config import AwsSettings, Env
from imagery.common.upload_events import parse_message, redrives_of

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient
    from types_aiobotocore_sqs.type_defs import MessageTypeDef

T = TypeVar("T")
Plain = dict[str, Any]
SQS_BATCH = 10
# How long what the command reads stays invisible to others at most: it releases it sooner,
# as soon as it is done; this bounds the wait only when the command is killed.
HOLD_SECONDS = 120


@dataclass(frozen=True, slots=True)
class Queues:
    aws: AwsSettings
    dead_letters: str
    main: str | None  # only redrive needs it

    @classmethod
    def from_env(cls, environ: Mapping[str, str], *, main: bool) -> Queues:
        """The queues and AWS settings the processor uses, from the same variables."""
        env = Env(environ)
        return cls(
            aws=AwsSettings(
                region=env.required("AWS_REGION", "the AWS region of the queues"),
                endpoint_url=env.raw("AWS_ENDPOINT_URL"),
                bucket=env.optional("S3_BUCKET", ""),  # not needed to move messages
            ),
            dead_letters=env.required("SQS_DLQ_URL", "the dead-letter queue of SQS_QUEUE_URL"),
            main=env.required("SQS_QUEUE_URL", "the queue the processor consumes")
            if main
            else None,
        )


def queue_name(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


@dataclass(slots=True)
class Letter:
    """One message of the dead-letter queue, as received (its handle is this receive's)."""

    message_id: str
    receipt_handle: str
    body: str
    receive_count: int  # SQS's, this receive included
    sent_at: datetime | None  # when the message was first sent (kept across the move to the DLQ)
    uploads: list[tuple[str, str]]  # (image id, object key) of each upload record it names
    redrives: int  # the processor's automatic redrives so far
    problem: str | None  # why it names no upload

    @property
    def image_ids(self) -> list[str]:
        return [image_id for image_id, _ in self.uploads]


def letter(message: MessageTypeDef) -> Letter:
    attributes = message.get("Attributes", {})
    sent = attributes.get("SentTimestamp", "")
    body = message.get("Body", "")
    uploads, problem, redrives = read_event(body)
    return Letter(
        message_id=message["MessageId"],
        receipt_handle=message["ReceiptHandle"],
        body=body,
        receive_count=int(attributes.get("ApproximateReceiveCount", "1")),
        sent_at=datetime.fromtimestamp(int(sent) / 1000, UTC) if sent.isdigit() else None,
        uploads=uploads,
        redrives=redrives,
        problem=problem,
    )


def read_event(body: str) -> tuple[list[tuple[str, str]], str | None, int]:
    """The uploads an S3 event names (in any bucket), why it names none, and the processor's
    redrive count."""
    parsed = parse_message(body, None)
    uploads = [(upload.image_id, upload.key) for upload in parsed.uploads]
    if parsed.test_event:
        problem: str | None = "an S3 test event"
    elif uploads:
        problem = None
    else:
        problem = "; ".join(parsed.ignored) or "no upload record (uploads/<image id>)"
    return uploads, problem, redrives_of(body) or 0


def _batches(items: Sequence[T]) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), SQS_BATCH):
        yield items[start : start + SQS_BATCH]


class SqsDeadLetterQueue:
    def __init__(self, client: SQSClient, url: str) -> None:
        self._client = client
        self._url = url

    async def depth(self) -> tuple[int, int]:
        """Messages visible, and not visible (received by someone, or parked)."""
        with aws_unavailable("SQS GetQueueAttributes"):
            response = await self._client.get_queue_attributes(
                QueueUrl=self._url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                ],
            )
        attributes = response.get("Attributes", {})
        return (
            int(attributes.get("ApproximateNumberOfMessages", "0")),
            int(attributes.get("ApproximateNumberOfMessagesNotVisible", "0")),
        )

    async def receive(self, max_messages: int, *, hold_seconds: int) -> list[Letter]:
        """Up to `max_messages` (at most 10), invisible to others for `hold_seconds`. A short
        long poll: with no wait at all, SQS answers from a sample of its servers only."""
        with aws_unavailable("SQS ReceiveMessage"):
            response = await self._client.receive_message(
                QueueUrl=self._url,
                MaxNumberOfMessages=max(1, min(max_messages, SQS_BATCH)),
                WaitTimeSeconds=1,
                VisibilityTimeout=hold_seconds,
                MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
            )
        return [letter(m) for m in response.get("Messages", [])]

    async def release(self, letters: Sequence[Letter]) -> int:
        """Make received messages visible again at once; returns how many SQS refused (they
        come back when their hold ends)."""
        refused = 0
        for batch in _batches(letters):
            with aws_unavailable("SQS ChangeMessageVisibilityBatch"):
                response = await self._client.change_message_visibility_batch(
                    QueueUrl=self._url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m.receipt_handle, "VisibilityTimeout": 0}
                        for i, m in enumerate(batch)
                    ],
                )
            refused += len(response.get("Failed", []))
        return refused

    async def send(self, queue_url: str, letters: Sequence[Letter]) -> list[Letter]:
        """Send the bodies, unchanged, to `queue_url`; returns the letters SQS accepted."""
        accepted: list[Letter] = []
        for batch in _batches(letters):
            with aws_unavailable("SQS SendMessageBatch"):
                response = await self._client.send_message_batch(
                    QueueUrl=queue_url,
                    Entries=[{"Id": str(i), "MessageBody": m.body} for i, m in enumerate(batch)],
                )
            accepted += [batch[int(entry["Id"])] for entry in response.get("Successful", [])]
        return accepted

    async def delete(self, letters: Sequence[Letter]) -> list[Letter]:
        """Delete them from the dead-letter queue; returns those SQS did not delete."""
        kept: list[Letter] = []
        for batch in _batches(letters):
            with aws_unavailable("SQS DeleteMessageBatch"):
                response = await self._client.delete_message_batch(
                    QueueUrl=self._url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m.receipt_handle}
                        for i, m in enumerate(batch)
                    ],
                )
            kept += [batch[int(entry["Id"])] for entry in response.get("Failed", [])]
        return kept


async def image_records(conn: asyncpg.Connection, letters: Iterable[Letter]) -> dict[str, Plain]:
    ids = sorted({i for m in letters for i in m.image_ids})
    rows = await conn.fetch(
        "SELECT id, project_id, status, failure_reason FROM image_records WHERE id = ANY($1)", ids
    )
    return {r["id"]: dict(r) for r in rows}


def letter_data(message: Letter, records: dict[str, Plain], now: datetime) -> Plain:
    def image(image_id: str, key: str) -> Plain:
        record = records.get(image_id, {})
        return {
            "image_id": image_id,
            "key": key,
            "project_id": record.get("project_id"),
            "status": record.get("status"),  # None: no record (deleted, or never created)
            "failure_reason": record.get("failure_reason"),
        }

    sent = message.sent_at
    return {
        "message_id": message.message_id,
        "sent_at": iso(sent),
        "age_seconds": None if sent is None else int((now - sent).total_seconds()),
        "receive_count": message.receive_count,
        "processor_redrives": message.redrives,
        "images": [image(image_id, key) for image_id, key in message.uploads],
        "problem": message.problem,
    }
