"""SqsMessageQueue: long-poll receive, batch delete that checks every entry, visibility."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from imagery.common.aws.clients import aws_unavailable
from imagery.common.errors import DependencyUnavailable
from imagery.processor.ports import QueueMessage

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient

SQS_BATCH_LIMIT = 10


class SqsMessageQueue:
    def __init__(self, client: SQSClient, queue_url: str) -> None:
        self._client = client
        self._queue_url = queue_url

    @property
    def queue_url(self) -> str:
        return self._queue_url

    async def receive(
        self, *, max_messages: int = 10, wait_seconds: int = 20
    ) -> list[QueueMessage]:
        with aws_unavailable("SQS ReceiveMessage"):
            resp = await self._client.receive_message(
                QueueUrl=self._queue_url,
                MaxNumberOfMessages=min(max_messages, SQS_BATCH_LIMIT),
                WaitTimeSeconds=wait_seconds,
                MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
            )
        return [
            QueueMessage(
                message_id=m["MessageId"],
                receipt_handle=m["ReceiptHandle"],
                body=m.get("Body", ""),
                receive_count=int(m.get("Attributes", {}).get("ApproximateReceiveCount", "1")),
                sent_at=_seconds(m.get("Attributes", {}).get("SentTimestamp")),
            )
            for m in resp.get("Messages", [])
        ]

    async def delete(self, messages: Sequence[QueueMessage]) -> list[QueueMessage]:
        failed: list[QueueMessage] = []
        for start in range(0, len(messages), SQS_BATCH_LIMIT):
            batch = messages[start : start + SQS_BATCH_LIMIT]
            with aws_unavailable("SQS DeleteMessageBatch"):
                resp = await self._client.delete_message_batch(
                    QueueUrl=self._queue_url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m.receipt_handle}
                        for i, m in enumerate(batch)
                    ],
                )
            failed.extend(batch[int(entry["Id"])] for entry in resp.get("Failed", []))
        return failed

    async def send(self, bodies: Sequence[str]) -> None:
        for start in range(0, len(bodies), SQS_BATCH_LIMIT):
            batch = bodies[start : start + SQS_BATCH_LIMIT]
            with aws_unavailable("SQS SendMessageBatch"):
                resp = await self._client.send_message_batch(
                    QueueUrl=self._queue_url,
                    Entries=[{"Id": str(i), "MessageBody": body} for i, body in enumerate(batch)],
                )
            if resp.get("Failed"):
                raise DependencyUnavailable(
                    f"SQS SendMessageBatch refused {len(resp['Failed'])} message(s): retry shortly."
                )

    async def change_visibility(self, message: QueueMessage, timeout_seconds: int) -> None:
        with aws_unavailable("SQS ChangeMessageVisibility"):
            await self._client.change_message_visibility(
                QueueUrl=self._queue_url,
                ReceiptHandle=message.receipt_handle,
                VisibilityTimeout=timeout_seconds,
            )

    async def visibility_timeout(self) -> int:
        """The queue's configured visibility timeout, in seconds."""
        with aws_unavailable("SQS GetQueueAttributes"):
            resp = await self._client.get_queue_attributes(
                QueueUrl=self._queue_url, AttributeNames=["VisibilityTimeout"]
            )
        return int(resp["Attributes"]["VisibilityTimeout"])

    async def approximate_depth(self) -> int:
        """Messages waiting (visible) in the queue."""
        with aws_unavailable("SQS GetQueueAttributes"):
            resp = await self._client.get_queue_attributes(
                QueueUrl=self._queue_url, AttributeNames=["ApproximateNumberOfMessages"]
            )
        return int(resp["Attributes"]["ApproximateNumberOfMessages"])

    async def approximate_counts(self) -> dict[str, int]:
        with aws_unavailable("SQS GetQueueAttributes"):
            resp = await self._client.get_queue_attributes(
                QueueUrl=self._queue_url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                    "ApproximateNumberOfMessagesDelayed",
                ],
            )
        attributes = resp.get("Attributes", {})
        return {
            "visible": int(attributes.get("ApproximateNumberOfMessages", "0")),
            "in_flight": int(attributes.get("ApproximateNumberOfMessagesNotVisible", "0")),
            "delayed": int(attributes.get("ApproximateNumberOfMessagesDelayed", "0")),
        }


def _seconds(milliseconds: str | None) -> float | None:
    """SQS's epoch-milliseconds attributes (SentTimestamp) as Unix seconds."""
    return int(milliseconds) / 1000 if milliseconds and milliseconds.isdigit() else None
