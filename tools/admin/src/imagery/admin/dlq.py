"""`imagery-admin dlq list|redrive`: the messages of the dead-letter queue, with the status of
the images they name, and moving them back to the main queue by hand. SQS (the services' AWS
settings) and Postgres (the images, the audit trail) straight, like `reprocess`."""

from __future__ import annotations

import os
import sys
from argparse import Namespace
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg

from imagery.admin import direct, jobs
from imagery.admin.deadletters import (
    HOLD_SECONDS,
    Letter,
    Queues,
    SqsDeadLetterQueue,
    image_records,
    letter_data,
    queue_name,
)
from imagery.admin.output import CliError, emit, table
from imagery.admin.redrive import redrive
from imagery.common.aws.clients import sqs_client
from imagery.common.upload_events import MAX_REDRIVES

Plain = dict[str, Any]
_SHOWN = 50  # messages printed as text, at most

_PERMISSIONS = (
    "It reads SQS_DLQ_URL (and SQS_QUEUE_URL to redrive), AWS_REGION, AWS_ENDPOINT_URL (local "
    "S3/SQS only) and the AWS credentials as the processor does."
)
LIST_ABOUT = (
    "List the messages waiting in the dead-letter queue without consuming them: each one's "
    "message id, age, SQS receive count (this read included), the processor's automatic "
    f"redrives of it (it parks a message after {MAX_REDRIVES}), and the images it names with "
    "their status and project in Postgres. Reading a message hides it from every other reader "
    "(the processor too), so the command makes each one visible again as soon as it has read "
    f"them all (if it is killed, they show again within {HOLD_SECONDS} s). Messages that are "
    "invisible already, received by the processor or parked by it, cannot be read: the "
    f"command counts them. {_PERMISSIONS}"
)
REDRIVE_ABOUT = (
    "Send dead letters back to the main queue, each deleted from the dead-letter queue only "
    "once SQS has accepted its copy (a failure between the two at worst sends one twice, which "
    "the processor's claims make harmless); audited as dlq.redrive. The processor does this on "
    "its own: at each housekeeping pass (PROCESSOR_GC_INTERVAL_SECONDS) in which S3 and "
    "Postgres answer, it sends dead letters back, counting each send in the message, and after "
    f"{MAX_REDRIVES} it parks the message in the dead-letter queue, invisible for 12 h, for an "
    "operator. This command is the operator's move, for when the cause is fixed: it sends "
    "messages back unchanged, their count included, so one that fails again is parked at once "
    "instead of going round again. It reaches only visible messages (`dlq list` counts the "
    "others). --image moves only messages naming one of those images, --limit at most N "
    "messages; --dry-run lists what would move and changes nothing (what it read is visible "
    "again when it ends). SQS's StartMessageMoveTask is not used: it can neither pick images "
    f"nor stop at a count, and the local S3/SQS server lacks it. {_PERMISSIONS}"
)


async def list_letters(dsn: str, queues: Queues, limit: int) -> tuple[list[Plain], int, int]:
    """What waits in the dead-letter queue, how many messages are invisible, and how many of
    those read SQS did not make visible again at once."""
    conn = await asyncpg.connect(dsn)  # first: a wrong DATABASE_URL touches no message
    try:
        read: dict[str, Letter] = {}
        unreleased = 0
        async with sqs_client(queues.aws) as client:
            dlq = SqsDeadLetterQueue(client, queues.dead_letters)
            try:
                while len(read) < limit:
                    batch = await dlq.receive(limit - len(read), hold_seconds=HOLD_SECONDS)
                    fresh = [m for m in batch if m.message_id not in read]
                    read.update((m.message_id, m) for m in batch)  # the newest handle counts
                    if not fresh:
                        break
            finally:
                unreleased = await dlq.release(list(read.values()))
            _, invisible = await dlq.depth()
        records = await image_records(conn, read.values())
    finally:
        await conn.close()
    now = datetime.now(UTC)
    return [letter_data(m, records, now) for m in read.values()], invisible, unreleased


def _age(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3600)
    return f"{days}d{hours}h" if days else f"{hours}h{rest // 60}m" if hours else f"{rest // 60}m"


def _rows(messages: Sequence[Plain], *extra: str) -> list[list[object]]:
    rows: list[list[object]] = []
    for m in messages[:_SHOWN]:
        redrives = f"{m['processor_redrives']}/{MAX_REDRIVES}"
        head = [m["message_id"], _age(m["age_seconds"]), m["receive_count"], redrives]
        tail = [m[e] for e in extra]
        if not m["images"]:
            rows.append([*head, None, None, m["problem"], *tail])
        for i in m["images"]:
            status = (i["status"] or "no record").upper()
            rows.append([*head, i["image_id"], i["project_id"], status, *tail])
    return rows


def _table(messages: Sequence[Plain], *extra: str) -> str:
    headers = ("MESSAGE ID", "AGE", "RECEIVES", "REDRIVES", "IMAGE", "PROJECT", "STATUS")
    text = table(headers + tuple(e.upper() for e in extra), _rows(messages, *extra))
    more = len(messages) - _SHOWN
    return text + (f"\n... and {more} more (--json lists them all)" if more > 0 else "")


def list_command(args: Namespace, dsn: str) -> None:
    queues = Queues.from_env(os.environ, main=False)
    data, invisible, unreleased = direct.run(lambda: list_letters(dsn, queues, args.limit))
    hidden = (
        f"{invisible} more message(s) are invisible (received by the processor, or parked by "
        "it for an operator): they cannot be listed until they show again."
        if invisible
        else ""
    )
    if unreleased:
        hidden += (
            f" SQS did not make {unreleased} of those read visible again at once: they show "
            f"again within {HOLD_SECONDS} s."
        )
    if args.json and hidden:
        print(hidden.strip(), file=sys.stderr)
    name = queue_name(queues.dead_letters)
    head = f"{len(data)} message(s) waiting in {name}, visible again." if data else ""
    body = _table(data) if data else f"No visible message waits in {name}."
    emit(args.json, data, lambda: "\n".join(t for t in (head, body, hidden.strip()) if t))


def redrive_command(args: Namespace, dsn: str) -> None:
    queues = Queues.from_env(os.environ, main=True)
    name = queue_name(queues.dead_letters)
    drawn: list[int] = []

    def progress(done: int, total: int) -> None:
        # The bar `backfill` and `projects purge` draw, on stderr so `--json` stays clean.
        state = "reading" if args.dry_run else "moving"
        job = {"kind": "redrive", "target": name, "state": state, "total": total, "done": done}
        jobs._draw(job, sys.stderr)
        drawn.append(done)

    try:
        data = direct.run(
            lambda: redrive(
                dsn,
                queues,
                limit=args.limit,
                only=args.images,
                dry_run=args.dry_run,
                progress=progress,
            )
        )
    finally:
        if drawn:
            sys.stderr.write("\n")
    emit(args.json, data, lambda: _redrive_text(data, name))
    if data["send_failed"]:
        raise CliError(
            f"SQS refused {data['send_failed']} message(s) sent to {queue_name(data['to'])}: "
            "they stay in the dead-letter queue; run the command again."
        )
    if data["images_not_found"]:
        raise CliError(
            f"No visible dead letter names {', '.join(data['images_not_found'])}: "
            "`imagery-admin dlq list` shows what waits, and how many are invisible."
        )


def _redrive_text(data: Plain, name: str) -> str:
    to = queue_name(data["to"])
    if data["dry_run"]:
        lines = [f"Would send {data['selected']} message(s) from {name} back to {to}:"]
        lines += [_table(data["messages"])] if data["messages"] else []
        return "\n".join([*lines, "Nothing was changed; what was read is visible again."])
    lines = [_table(data["messages"], "outcome")] if data["messages"] else []
    lines.append(
        f"Sent {data['moved']} message(s) from {name} back to {to} (examined "
        f"{data['examined']}, left {data['left']}); {data['send_failed']} could not be sent "
        f"(still in {name}); {data['not_deleted']} sent but not deleted from {name} (they "
        "will be sent again, which is harmless)."
    )
    return "\n".join(lines)
