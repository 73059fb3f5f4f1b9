"""Messages that reached the dead-letter queue anyway (an outage longer than the queue's
receives) go back to the main queue once the dependencies answer again: receive, send, then
delete, so a message is never lost between the two queues (at worst it is sent twice, which
the processor's claims make harmless). A file that keeps failing cannot loop through here for
ever: its record counts attempts and ends FAILED."""

from __future__ import annotations

import logging

from imagery.common.errors import DependencyUnavailable
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
            await self._queue.send([m.body for m in messages])
            await self._dead_letters.delete(messages)
            moved += len(messages)
        if moved:
            log.info("dead letters sent back to the queue", extra={"messages": moved})
        return moved
