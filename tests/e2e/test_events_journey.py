"""Image events end to end (issue 19): real uploads through the real processor, whose relay
publishes the outbox to a topic on moto's SNS; queues subscribed to it (one with a team's
filter policy on `project_id`) read what a consumer would."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import boto3
import httpx
import pytest
from PIL import Image

from imagery.devstack.aws import AwsResources
from imagery.devstack.pipeline import Pipeline
from imagery.devstack.services import ServiceProcess
from imagery.v1 import delivery_service_pb2 as dpb
from imagery.v1 import delivery_service_pb2_grpc as dpb_grpc
from imagery.v1 import image_pb2
from imagery.v1 import upload_service_pb2 as upb
from imagery.v1 import upload_service_pb2_grpc as upb_grpc
from tests import grpc_auth

pytestmark = pytest.mark.e2e


@pytest.fixture
def processor(database_url: str, aws: AwsResources, tmp_path: Path) -> Iterator[ServiceProcess]:
    process = Pipeline(database_url, aws, tmp_path).processor(EVENTS_POLL_SECONDS="0.2")
    yield process
    process.stop()


def _subscribed_queue(aws: AwsResources, name: str, project_id: str) -> str:
    """A queue taking only `project_id`'s events, as a team would subscribe."""
    sns = boto3.client("sns", endpoint_url=aws.endpoint_url, region_name=aws.region)
    sqs = boto3.client("sqs", endpoint_url=aws.endpoint_url, region_name=aws.region)
    url: str = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
    sns.subscribe(
        TopicArn=aws.events_topic_arn,
        Protocol="sqs",
        Endpoint=arn["QueueArn"],
        Attributes={
            "RawMessageDelivery": "true",
            "FilterPolicy": json.dumps({"project_id": [project_id]}),
        },
    )
    return url


def _drain(aws: AwsResources, queue_url: str, want: int, within: float) -> list[dict[str, Any]]:
    """Every message the queue holds, waiting up to `within` seconds for `want` of them."""
    sqs = boto3.client("sqs", endpoint_url=aws.endpoint_url, region_name=aws.region)
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        answer = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            MessageAttributeNames=["All"],
        )
        for message in answer.get("Messages", []):
            got.append(message)
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        if len(got) >= want and not answer.get("Messages"):
            break
    return got


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.linear_gradient("L").resize((640, 480)).convert("RGB").save(buffer, "JPEG")
    return buffer.getvalue()


async def _upload(upload: ServiceProcess, key: str, body: bytes, content_type: str) -> str:
    async with grpc_auth.channel(f"127.0.0.1:{upload.port}", key) as channel:
        ticket = await upb_grpc.UploadServiceStub(channel).CreateUploadUrl(
            upb.CreateUploadUrlRequest(
                content_type=content_type, file_name="post.jpg", labels={"post": "p-17"}
            )
        )
    async with httpx.AsyncClient() as http:
        put = await http.put(ticket.upload_url, content=body, headers=dict(ticket.required_headers))
    assert put.status_code == 200
    image_id: str = ticket.image_id
    return image_id


async def _wait_status(delivery: ServiceProcess, key: str, image_id: str) -> image_pb2.Image:
    async with grpc_auth.channel(f"127.0.0.1:{delivery.port}", key) as channel:
        for _ in range(300):
            answer = await dpb_grpc.DeliveryServiceStub(channel).GetImage(
                dpb.GetImageRequest(image_id=image_id)
            )
            if answer.image.status in (image_pb2.IMAGE_STATUS_READY, image_pb2.IMAGE_STATUS_FAILED):
                image: image_pb2.Image = answer.image
                return image
            await asyncio.sleep(0.2)
    raise AssertionError(f"{image_id} did not end in time")


async def test_ready_failed_and_deleted_images_are_announced_once_each_in_order(
    upload_service: ServiceProcess,
    delivery_service: ServiceProcess,
    processor: ServiceProcess,
    keys: dict[str, str],
    aws: AwsResources,
    database_url: str,
) -> None:
    key = keys["IMAGERY_API_KEY"]  # the `default` project's
    ours = _subscribed_queue(aws, f"{aws.bucket}-team-default", "default")
    theirs = _subscribed_queue(aws, f"{aws.bucket}-team-other", "other-team")

    good = await _upload(upload_service, key, _jpeg(), "image/jpeg")
    bad = await _upload(upload_service, key, b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "image/png")
    ready = await _wait_status(delivery_service, key, good)
    failed = await _wait_status(delivery_service, key, bad)
    assert ready.status == image_pb2.IMAGE_STATUS_READY
    assert failed.status == image_pb2.IMAGE_STATUS_FAILED
    async with grpc_auth.channel(f"127.0.0.1:{upload_service.port}", key) as channel:
        await upb_grpc.UploadServiceStub(channel).DeleteImage(upb.DeleteImageRequest(image_id=good))

    messages = _drain(aws, aws.events_queue_url, want=3, within=30)
    events = [json.loads(m["Body"]) for m in messages]
    by_kind = {(e["data"]["image_id"], e["type"]): e for e in events}
    assert sorted(by_kind) == sorted(
        [(good, "image.ready"), (good, "image.deleted"), (bad, "image.failed")]
    ), events
    assert len(events) == 3  # a relay that did not die publishes each once

    announced = by_kind[(good, "image.ready")]
    data = announced["data"]
    assert announced["specversion"] == "1.0" and announced["subject"] == f"images/{good}"
    assert data["status"] == "READY" and data["project_id"] == "default"
    assert (data["width"], data["height"], data["format"]) == (640, 480, "jpeg")
    assert data["labels"] == {"post": "p-17"}
    assert data["placeholder"]["blurhash"] == ready.placeholder.blurhash
    assert base64.b64decode(data["placeholder"]["thumbhash"]) == ready.placeholder.thumbhash
    assert data["average_color"] == ready.average_color
    assert [c["color"] for c in data["dominant_colors"]] == [c.color for c in ready.dominant_colors]
    # The upload's trace: the traceparent CreateUploadUrl recorded with the image.
    conn = await asyncpg.connect(database_url)
    try:
        trace = await conn.fetchval("SELECT trace_context FROM image_records WHERE id = $1", bad)
    finally:
        await conn.close()
    assert announced["traceparent"].startswith("00-")
    assert by_kind[(bad, "image.failed")]["traceparent"] == trace
    # Sequences order each image's events: the deletion comes after READY.
    assert data["sequence"] == 1 and "sequence" not in announced  # not the CloudEvents string
    assert by_kind[(good, "image.deleted")]["data"]["sequence"] == 2
    assert by_kind[(good, "image.deleted")]["data"]["status"] == "DELETED"
    assert by_kind[(bad, "image.failed")]["data"]["failure_reason"] in ("CORRUPT", "EMPTY")
    # Never a URL: nothing a subscriber could fetch the image with.
    for message in messages:
        assert "http" not in message["Body"] and "X-Amz" not in message["Body"]
        attributes = message["MessageAttributes"]
        assert attributes["project_id"]["StringValue"] == "default"
        assert attributes["type"]["StringValue"].startswith("image.")

    # Filter policies: the team subscribed to `default` got the same three, the other none.
    assert len(_drain(aws, ours, want=3, within=10)) == 3
    assert _drain(aws, theirs, want=1, within=2) == []
