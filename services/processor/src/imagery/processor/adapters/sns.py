"""Image events to the SNS topic (EVENTS_TOPIC_ARN): CloudEvents JSON bodies
(`imagery.common.events`), `project_id` and `type` as message attributes, so a team's
subscription takes only its project's events with a filter policy. PublishBatch sends ten
per call; the calls of a batch run at once."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from imagery.common.aws.clients import aws_unavailable
from imagery.common.events import envelope
from imagery.processor.ports import OutboxEvent

if TYPE_CHECKING:
    from types_aiobotocore_sns import SNSClient
    from types_aiobotocore_sns.type_defs import PublishBatchRequestEntryTypeDef

log = logging.getLogger(__name__)
PER_CALL = 10  # PublishBatch's most


class SnsEventPublisher:
    def __init__(self, sns: SNSClient, topic_arn: str) -> None:
        self._sns = sns
        self._topic = topic_arn

    async def publish(self, events: Sequence[OutboxEvent]) -> list[int]:
        chunks = [events[i : i + PER_CALL] for i in range(0, len(events), PER_CALL)]
        accepted = await asyncio.gather(*(self._publish(chunk) for chunk in chunks))
        return [event_id for ids in accepted for event_id in ids]

    async def _publish(self, events: Sequence[OutboxEvent]) -> list[int]:
        entries: list[PublishBatchRequestEntryTypeDef] = [
            {
                "Id": str(event.id),
                "Message": json.dumps(
                    envelope(
                        event_id=event.id,
                        type=event.type,
                        project_id=event.project_id,
                        image_id=event.image_id,
                        sequence=event.sequence,
                        trace_context=event.trace_context,
                        payload=event.payload,
                        time=event.created_at,
                    ),
                    separators=(",", ":"),
                ),
                "MessageAttributes": {
                    "project_id": {"DataType": "String", "StringValue": event.project_id},
                    "type": {"DataType": "String", "StringValue": event.type},
                },
            }
            for event in events
        ]
        with aws_unavailable("Publishing image events"):
            answer = await self._sns.publish_batch(
                TopicArn=self._topic, PublishBatchRequestEntries=entries
            )
        failed = answer.get("Failed", [])
        if failed:
            log.warning(
                "events topic refused events; they are published again later",
                extra={
                    "refused": len(failed),
                    "codes": sorted({f.get("Code", "") for f in failed}),
                    "error": failed[0].get("Message", ""),
                },
            )
        return [int(ok["Id"]) for ok in answer.get("Successful", []) if "Id" in ok]
