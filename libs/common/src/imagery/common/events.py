"""Image events as subscribers receive them: CloudEvents 1.0 in JSON (structured mode), one
per SNS message, with `project_id` and `type` as SNS message attributes for filter policies.

    {"specversion": "1.0", "id": "8812", "source": "imagery", "type": "image.ready",
     "subject": "images/01J...", "time": "2026-12-03T17:40:00.123456+00:00",
     "datacontenttype": "application/json", "traceparent": "00-...-01",
     "data": {"project_id": "shop", "image_id": "01J...", "sequence": 2, "status": "READY",
              "failure_reason": null, "width": 1200, "height": 800, "format": "jpeg", ...,
              "placeholder": {"thumbhash": "<base64>", "blurhash": "..."},
              "average_color": "#6d6d6d", "dominant_colors": [...], "labels": {...}}}

Delivery is at least once and unordered: a consumer keeps, per image, the highest
`data.sequence` it has handled and drops an event whose sequence is not higher. It is an
integer in `data`, not the CloudEvents `sequence` extension attribute (a string compared as
text, where 10 sorts before 9). No event carries a URL."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

TYPES = ("image.ready", "image.failed", "image.blocked", "image.deleted")
SOURCE = "imagery"


def envelope(
    *,
    event_id: int,
    type: str,
    project_id: str,
    image_id: str,
    sequence: int,
    trace_context: str | None,
    payload: Mapping[str, Any],
    time: datetime,
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": str(event_id),
        "source": SOURCE,
        "type": type,
        "subject": f"images/{image_id}",
        "time": time.isoformat(),
        "datacontenttype": "application/json",
        "data": {"project_id": project_id, "image_id": image_id, "sequence": sequence, **payload},
    }
    if trace_context:
        event["traceparent"] = trace_context  # the CloudEvents distributed-tracing extension
    return event
