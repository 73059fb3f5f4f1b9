"""Fakes for the consumer's fair share: a queue that keeps SQS's visibility rules, and the
projects of uploads as the processor reads them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from imagery.common.errors import DependencyUnavailable
from imagery.processor.ports import QueueMessage


def upload_event(bucket: str, image_id: str) -> str:
    """The body S3 sends to the queue when `uploads/<image_id>` is written."""
    record = {
        "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": bucket}, "object": {"key": f"uploads/{image_id}"}},
    }
    return json.dumps({"Records": [record]})


def image_id(n: int) -> str:
    """A valid image id (ULID) that ends with `n`."""
    return f"01ARZ3NDEKTSV4RRFFQ69G{n:04d}"


@dataclass
class _Stored:
    message_id: str
    body: str
    receives: int = 0
    visible_at: float = 0.0
    handle: str = ""


class RedeliveringQueue:
    """SQS's visibility rules on the event loop's clock: a received message is invisible for
    the visibility timeout, or for as long as `change_visibility` last said, then comes back
    with its receive count one higher. Visible messages are returned in the order they were
    sent, as the local SQS returns them. Only the latest receipt handle is honoured."""

    def __init__(self, *, visibility_timeout: int = 60) -> None:
        self._timeout = visibility_timeout
        self._messages: dict[str, _Stored] = {}
        self._gone: list[_Stored] = []
        self.deleted: list[str] = []  # message ids, in order
        self.visibility: list[tuple[str, int]] = []  # (message id, seconds), in order
        self.asked: list[int] = []  # max_messages of each receive

    def send(self, message_id: str, body: str) -> None:
        self._messages[message_id] = _Stored(message_id, body)

    def receive_counts(self) -> dict[str, int]:
        """How often each message was received, deleted ones included."""
        return {m.message_id: m.receives for m in [*self._gone, *self._messages.values()]}

    async def receive(
        self, *, max_messages: int = 10, wait_seconds: int = 20
    ) -> list[QueueMessage]:
        self.asked.append(max_messages)
        now = asyncio.get_running_loop().time()
        visible = [m for m in self._messages.values() if m.visible_at <= now][:max_messages]
        if not visible:
            await asyncio.sleep(0.05)  # a long poll that found nothing (time is virtual)
            return []
        for stored in visible:
            stored.receives += 1
            stored.visible_at = now + self._timeout
            stored.handle = f"{stored.message_id}#{stored.receives}"
        return [QueueMessage(m.message_id, m.handle, m.body, m.receives) for m in visible]

    async def delete(self, messages: Sequence[QueueMessage]) -> list[QueueMessage]:
        for message in messages:
            stored = self._messages.get(message.message_id)
            if stored is not None and stored.handle == message.receipt_handle:
                self._gone.append(self._messages.pop(message.message_id))
                self.deleted.append(message.message_id)
        return []

    async def change_visibility(self, message: QueueMessage, timeout_seconds: int) -> None:
        stored = self._messages.get(message.message_id)
        if stored is not None and stored.handle == message.receipt_handle:
            stored.visible_at = asyncio.get_running_loop().time() + timeout_seconds
            self.visibility.append((message.message_id, timeout_seconds))


class FakeUploadProjects:
    """The project of each upload still to be processed; `down` makes every read fail."""

    def __init__(self, owners: dict[str, str], *, down: bool = False) -> None:
        self.owners = owners
        self.down = down
        self.reads: list[set[str]] = []

    async def projects_of(self, image_ids: Collection[str]) -> dict[str, str]:
        self.reads.append(set(image_ids))
        if self.down:
            raise DependencyUnavailable("Postgres is down")
        return {i: self.owners[i] for i in image_ids if i in self.owners}
