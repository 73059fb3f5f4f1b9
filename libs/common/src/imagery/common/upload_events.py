"""S3 event notifications as SQS delivers them: which upload keys a message names, and how
often the processor has sent it back from the dead-letter queue (read by the processor and
by `imagery-admin dlq`).

A message that fails before any job starts is sent back at most `MAX_REDRIVES` times,
counted in the event itself under `REDRIVES`, then parked in the dead-letter queue for an
operator, invisible for `PARKED_SECONDS`."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from urllib.parse import unquote_plus

from imagery.common.storage_keys import GLOBAL_SCOPE, image_id_from_upload_key

log = logging.getLogger(__name__)
MAX_REDRIVES = 3
REDRIVES = "imageryRedrives"  # a key S3 never writes into its events
PARKED_SECONDS = 12 * 3600  # SQS's longest visibility timeout


@dataclass(frozen=True, slots=True)
class Upload:
    image_id: str
    key: str


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    uploads: list[Upload] = field(default_factory=list)
    test_event: bool = False
    ignored: list[str] = field(default_factory=list)  # why records were dropped


def parse_message(body: str, bucket: str | None) -> ParsedMessage:
    """Never raises: malformed input yields a message with nothing to do and the reason.
    `bucket`: the only bucket whose events count (None: any)."""
    try:
        payload = json.loads(body)
    except ValueError:
        return ParsedMessage(ignored=["body is not JSON"])
    if not isinstance(payload, dict):
        return ParsedMessage(ignored=["body is not a JSON object"])
    if payload.get("Event") == "s3:TestEvent":
        return ParsedMessage(test_event=True)
    records = payload.get("Records")
    if not isinstance(records, list):
        return ParsedMessage(ignored=["no Records list"])
    uploads, ignored = [], []
    for record in records:
        upload, problem = _upload_from(record, bucket)
        if upload is not None:
            uploads.append(upload)
        else:
            ignored.append(problem)
    return ParsedMessage(uploads=uploads, ignored=ignored)


def _upload_from(record: object, bucket: str | None) -> tuple[Upload | None, str]:
    try:
        name = str(record["eventName"])  # type: ignore[index]
        s3 = record["s3"]  # type: ignore[index]
        record_bucket = str(s3["bucket"]["name"])
        key = unquote_plus(str(s3["object"]["key"]))
    except (KeyError, TypeError):
        return None, "record without eventName/s3.bucket.name/s3.object.key"
    if not name.startswith("ObjectCreated"):
        return None, f"event {name[:40]} is not an upload"
    if bucket is not None and record_bucket != bucket:
        return None, f"bucket {record_bucket[:63]} is not ours"
    image_id = image_id_from_upload_key(GLOBAL_SCOPE, key)
    if image_id is None:
        return None, f"key {key[:80]!r} is not uploads/<image id>"
    return Upload(image_id, key), ""


def redrives_of(body: str) -> int | None:
    """How often the processor has sent this message back; None for a body that is not an
    event (nothing to count). A count it cannot read counts as the full share."""
    try:
        event = json.loads(body)
    except ValueError:
        return None
    if not isinstance(event, dict):
        return None
    redrives = event.get(REDRIVES, 0)
    return redrives if isinstance(redrives, int) else MAX_REDRIVES


def counted(body: str) -> str | None:
    """The body with one more redrive counted, or None when it has had its share (a body
    that is not an event goes back as it is: the consumer drops it)."""
    redrives = redrives_of(body)
    if redrives is None:
        return body
    if redrives >= MAX_REDRIVES:
        return None
    return json.dumps({**json.loads(body), REDRIVES: redrives + 1})
