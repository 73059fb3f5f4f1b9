"""`imagery-admin dlq redrive`: dead letters back to the main queue by receive, send, then
delete (never the other way round), one audit event for the run."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from imagery.admin import direct
from imagery.admin.deadletters import (
    HOLD_SECONDS,
    Letter,
    Queues,
    SqsDeadLetterQueue,
    image_records,
    letter_data,
    queue_name,
)
from imagery.common.aws.clients import sqs_client
from imagery.common.db.projects import audit

Plain = dict[str, Any]
Progress = Callable[[int, int], None]
_AUDITED_IMAGES = 1000  # image ids listed in one audit event, at most


@dataclass
class Redrive:
    limit: int | None
    only: Collection[str]
    dry_run: bool
    examined: int = 0
    chosen: list[Letter] = field(default_factory=list)  # moved, or would move
    refused: list[Letter] = field(default_factory=list)  # SQS did not accept the copy
    undeleted: list[Letter] = field(default_factory=list)  # sent, still in the DLQ
    kept: dict[str, Letter] = field(default_factory=dict)  # read, not moved: released at the end

    def room(self) -> int | None:
        return None if self.limit is None else self.limit - len(self.chosen)

    def wants(self, message: Letter) -> bool:
        return not self.only or any(i in self.only for i in message.image_ids)


async def _move(
    run: Redrive, dlq: SqsDeadLetterQueue, to: str, total: int, progress: Progress
) -> None:
    done = {m.message_id for m in run.chosen}
    while (room := run.room()) is None or room > 0:
        asked = 10 if room is None or run.only else room
        batch = await dlq.receive(asked, hold_seconds=HOLD_SECONDS)
        for message in batch:  # read again after its hold: only the newest handle counts
            if message.message_id in run.kept:
                run.kept[message.message_id] = message
        fresh = [m for m in batch if m.message_id not in run.kept and m.message_id not in done]
        if not fresh:
            return
        run.examined += len(fresh)
        chosen = [m for m in fresh if run.wants(m)][:room]
        done.update(m.message_id for m in chosen)
        run.kept.update((m.message_id, m) for m in fresh if m.message_id not in done)
        run.chosen += chosen
        if run.dry_run:
            run.kept.update((m.message_id, m) for m in chosen)
        elif chosen:
            sent = await dlq.send(to, chosen)
            accepted = {m.message_id for m in sent}
            refused = [m for m in chosen if m.message_id not in accepted]
            run.refused += refused
            run.kept.update((m.message_id, m) for m in refused)
            run.undeleted += await dlq.delete(sent)
        progress(run.examined, max(total, run.examined))


async def redrive(
    dsn: str,
    queues: Queues,
    *,
    limit: int | None,
    only: Sequence[str],
    dry_run: bool,
    progress: Progress,
) -> Plain:
    assert queues.main is not None
    run = Redrive(limit=limit, only=frozenset(only), dry_run=dry_run)
    conn = await asyncpg.connect(dsn)  # first: a wrong DATABASE_URL moves nothing
    try:
        try:
            async with sqs_client(queues.aws) as client:
                dlq = SqsDeadLetterQueue(client, queues.dead_letters)
                visible, _ = await dlq.depth()
                total = visible if limit is None or only else min(limit, visible)
                try:
                    await _move(run, dlq, queues.main, total, progress)
                finally:
                    await dlq.release(list(run.kept.values()))
        except BaseException:
            if not dry_run:  # what moved before the failure is on the record too
                await _audit(conn, queues, run, outcome="failed")
            raise
        if not dry_run:
            await _audit(conn, queues, run, outcome="partial" if run.refused else "ok")
        records = await image_records(conn, run.chosen)
    finally:
        await conn.close()
    return _redrive_data(run, queues, records)


async def _audit(conn: asyncpg.Connection, queues: Queues, run: Redrive, *, outcome: str) -> None:
    assert queues.main is not None
    refused = {m.message_id for m in run.refused}
    moved = [m for m in run.chosen if m.message_id not in refused]
    images = sorted({i for m in moved for i in m.image_ids})
    await audit(
        conn,
        direct.actor(),
        "dlq.redrive",
        f"queues/{queue_name(queues.dead_letters)}",
        project_id=None,
        outcome=outcome,
        details={
            "to": queue_name(queues.main),
            "moved": len(moved),
            "send_failed": len(refused),
            "not_deleted": len(run.undeleted),
            "images": images[:_AUDITED_IMAGES],
            "images_total": len(images),
            "limit": run.limit,
            "only_images": sorted(run.only),
        },
    )


def _redrive_data(run: Redrive, queues: Queues, records: dict[str, Plain]) -> Plain:
    refused = {m.message_id for m in run.refused}
    undeleted = {m.message_id for m in run.undeleted}

    def outcome(message: Letter) -> str:
        if run.dry_run:
            return "would_move"
        if message.message_id in refused:
            return "send_failed"
        return "moved_not_deleted" if message.message_id in undeleted else "moved"

    now = datetime.now(UTC)
    named = {i for m in run.chosen for i in m.image_ids}
    return {
        "dry_run": run.dry_run,
        "from": queues.dead_letters,
        "to": queues.main,
        "examined": run.examined,
        "selected": len(run.chosen),
        "moved": 0 if run.dry_run else len(run.chosen) - len(refused),
        "send_failed": len(refused),
        "not_deleted": len(undeleted),
        # read, not chosen: naming other images, or over --limit
        "left": len(run.kept.keys() - {m.message_id for m in run.chosen}),
        "images_not_found": sorted(i for i in run.only if i not in named),
        "messages": [{**letter_data(m, records, now), "outcome": outcome(m)} for m in run.chosen],
    }
