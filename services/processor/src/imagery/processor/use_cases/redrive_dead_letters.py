"""Messages that reached the dead-letter queue anyway (an outage longer than the queue's
receives) go back to the main queue once the dependencies answer again: receive, send, then
delete, so a message is never lost between the two queues (at worst it is sent twice, which
the processor's claims make harmless). A file whose jobs keep failing ends FAILED by its
attempt counter; a message that fails before any job starts (an object S3 refuses to read)
is sent back at most `MAX_REDRIVES` times, counted in the event itself, and then parked in
the dead-letter queue for an operator (the DLQ alarm; `imagery.common.upload_events`)."""

from __future__ import annotations

import logging

from imagery.common.errors import DependencyUnavailable
from imagery.common.upload_events import PARKED_SECONDS, counted
from imagery.processor.ports import DeadLetters, DependencyProbe, MessageSender

log = logging.getLogger(__name__)


class RedriveDeadLetters:
    def __init__(
        self, dead_letters: DeadLetters, queue: MessageSender, probe: DependencyProbe
    ) -> None:
        self._dead_letters = dead_letters
        self._queue = queue
        self._probe = probe

    async def __call__(self, limit: int = 100) -> int:
        """One pass of at most `limit` messages; returns how many went back."""
        if await self._dead_letters.approximate_depth() == 0:
            return 0
        try:
            await self._probe.check()
        except DependencyUnavailable:
            return 0  # not recovered yet: they would only come straight back
        moved = 0
        while moved < limit:
            messages = await self._dead_letters.receive(max_messages=10, wait_seconds=0)
            if not messages:
                break
            again = [(m, counted(m.body)) for m in messages]
            back = [(m, body) for m, body in again if body is not None]
            for message, body in again:
                if body is None:
                    log.warning(
                        "a dead letter came back too often: parked for an operator",
                        extra={"message_id": message.message_id},
                    )
                    await self._dead_letters.change_visibility(message, PARKED_SECONDS)
            if back:
                await self._queue.send([body for _, body in back])
                await self._dead_letters.delete([m for m, _ in back])
            moved += len(back)
            if not back:
                break
        if moved:
            log.info("dead letters sent back to the queue", extra={"messages": moved})
        return moved
