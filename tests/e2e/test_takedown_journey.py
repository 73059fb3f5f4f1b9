"""Takedown end to end (issue 19): the same file uploaded in two projects, then
`imagery-admin block` against the real services, the real processor (its takedown job, moto's
S3 with versioning and moto's CloudFront), and the events topic."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import boto3
import grpc
import httpx
import pytest
from PIL import Image, ImageDraw

from imagery.devstack.aws import AwsResources, create_distribution
from imagery.devstack.pipeline import Pipeline
from imagery.devstack.services import ServiceProcess
from imagery.v1 import delivery_service_pb2 as dpb
from imagery.v1 import delivery_service_pb2_grpc as dpb_grpc
from imagery.v1 import errors_pb2, image_pb2
from imagery.v1 import project_pb2 as pb
from imagery.v1 import project_service_pb2 as ppb
from imagery.v1 import project_service_pb2_grpc as pgrpc
from imagery.v1 import upload_service_pb2 as upb
from imagery.v1 import upload_service_pb2_grpc as upb_grpc
from tests import grpc_auth
from tests.e2e.test_events_journey import _drain
from tests.integration.test_admin_cli import admin

pytestmark = pytest.mark.e2e
TERMINAL = (
    image_pb2.IMAGE_STATUS_READY,
    image_pb2.IMAGE_STATUS_FAILED,
    image_pb2.IMAGE_STATUS_BLOCKED,
)


@pytest.fixture
def distribution(aws: AwsResources) -> str:
    return create_distribution(aws.endpoint_url, aws.bucket, region=aws.region)


@pytest.fixture
def processor(
    database_url: str, aws: AwsResources, distribution: str, tmp_path: Path
) -> Iterator[ServiceProcess]:
    process = Pipeline(database_url, aws, tmp_path).processor(
        CLOUDFRONT_DISTRIBUTION_ID=distribution,
        PROCESSOR_GC_INTERVAL_SECONDS="1",  # operator jobs are picked up within a second
        EVENTS_POLL_SECONDS="0.2",
    )
    yield process
    process.stop()


def _picture(seed: int) -> bytes:
    image = Image.new("RGB", (320, 240), (seed * 40 % 256, 90, 160))
    ImageDraw.Draw(image).ellipse((40, 40, 200, 200), fill=(250, 220, seed * 70 % 256))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


async def _second_project_key(upload: ServiceProcess, admin_key: str) -> str:
    async with grpc_auth.channel(f"127.0.0.1:{upload.port}", admin_key) as channel:
        projects = pgrpc.ProjectServiceStub(channel)
        await projects.CreateProject(
            ppb.CreateProjectRequest(project_id="shop", project=pb.Project(display_name="Shop"))
        )
        created = await projects.CreateApiKey(
            ppb.CreateApiKeyRequest(
                parent="projects/shop",
                api_key=pb.ApiKey(display_name="app", scopes=["images.create", "images.read"]),
            )
        )
    key: str = created.key
    return key


async def _upload(
    upload: ServiceProcess, delivery: ServiceProcess, key: str, body: bytes
) -> image_pb2.Image:
    async with grpc_auth.channel(f"127.0.0.1:{upload.port}", key) as channel:
        ticket = await upb_grpc.UploadServiceStub(channel).CreateUploadUrl(
            upb.CreateUploadUrlRequest(content_type="image/jpeg", file_name="photo.jpg")
        )
    async with httpx.AsyncClient() as http:
        put = await http.put(ticket.upload_url, content=body, headers=dict(ticket.required_headers))
    assert put.status_code == 200
    return await _get(delivery, key, ticket.image_id, wait=True)


async def _get(
    delivery: ServiceProcess, key: str, image_id: str, *, wait: bool = False
) -> image_pb2.Image:
    async with grpc_auth.channel(f"127.0.0.1:{delivery.port}", key) as channel:
        for _ in range(300):
            answer = await dpb_grpc.DeliveryServiceStub(channel).GetImage(
                dpb.GetImageRequest(image_id=image_id)
            )
            if not wait or answer.image.status in TERMINAL:
                image: image_pb2.Image = answer.image
                return image
            await asyncio.sleep(0.2)
    raise AssertionError(f"{image_id} did not end in time")


def _versions(aws: AwsResources, prefix: str) -> int:
    s3 = boto3.client("s3", endpoint_url=aws.endpoint_url, region_name=aws.region)
    listed = s3.list_object_versions(Bucket=aws.bucket, Prefix=prefix)
    return len(listed.get("Versions", [])) + len(listed.get("DeleteMarkers", []))


async def test_a_blocked_file_is_gone_everywhere_and_cannot_come_back_until_unblocked(
    upload_service: ServiceProcess,
    delivery_service: ServiceProcess,
    processor: ServiceProcess,
    keys: dict[str, str],
    aws: AwsResources,
    distribution: str,
    database_url: str,
) -> None:
    s3 = boto3.client("s3", endpoint_url=aws.endpoint_url, region_name=aws.region)
    s3.put_bucket_versioning(Bucket=aws.bucket, VersioningConfiguration={"Status": "Enabled"})
    ours, theirs = (
        keys["IMAGERY_API_KEY"],
        await _second_project_key(upload_service, keys["IMAGERY_ADMIN_KEY"]),
    )
    hostile, control = _picture(1), _picture(2)
    here = await _upload(upload_service, delivery_service, ours, hostile)
    there = await _upload(upload_service, delivery_service, theirs, hostile)
    kept = await _upload(upload_service, delivery_service, ours, control)
    assert {here.status, there.status, kept.status} == {image_pb2.IMAGE_STATUS_READY}
    conn = await asyncpg.connect(database_url)
    try:
        addresses = {
            r["id"]: r["sha256"]
            for r in await conn.fetch(
                "SELECT id, sha256 FROM image_records WHERE id = ANY($1::text[])",
                [here.image_id, there.image_id, kept.image_id],
            )
        }
    finally:
        await conn.close()
    hostile_addresses = {addresses[here.image_id], addresses[there.image_id]}
    assert len(hostile_addresses) == 2, "projects keep their own copy of the same bytes"
    _drain(aws, aws.events_queue_url, want=3, within=10)  # the three image.ready events

    done = await admin(
        "block",
        here.image_id,
        "--reason",
        "ticket T-1: reported",
        "--json",
        database_url=database_url,
    )
    assert done.code == 0, done.err
    answer = done.json()
    assert answer["sha256"] == hashlib.sha256(hostile).hexdigest()
    assert answer["projects"] == {"default": 1, "shop": 1} and answer["images_blocked"] == 2
    result = answer["result"]
    assert result["contents"] == 2 and result["object_versions_deleted"] >= 2 * 4
    (invalidation,) = result["invalidations"]
    assert sorted(invalidation["paths"]) == sorted(f"/variants/{a}/*" for a in hostile_addresses)

    # Both images, in both projects, are BLOCKED and serve no URL; the other image is untouched.
    for key, image in ((ours, here), (theirs, there)):
        now = await _get(delivery_service, key, image.image_id)
        assert now.status == image_pb2.IMAGE_STATUS_BLOCKED
        assert now.failure_reason == "BLOCKED"
        async with grpc_auth.channel(f"127.0.0.1:{delivery_service.port}", key) as channel:
            stub = dpb_grpc.DeliveryServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.GetDownloadUrl(
                    dpb.GetDownloadUrlRequest(image_id=image.image_id, variant="thumbnail")
                )
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "taken down" in (refused.value.details() or "")
            batch = await stub.BatchGetDownloadUrls(
                dpb.BatchGetDownloadUrlsRequest(image_ids=[image.image_id], variant="thumbnail")
            )
            assert [f.reason for f in batch.failures] == [errors_pb2.ERROR_REASON_BLOCKED]
    async with grpc_auth.channel(f"127.0.0.1:{delivery_service.port}", ours) as channel:
        url = await dpb_grpc.DeliveryServiceStub(channel).GetDownloadUrl(
            dpb.GetDownloadUrlRequest(image_id=kept.image_id, variant="thumbnail")
        )
    assert url.url

    # Every version of every object of the content is gone; the other content is kept.
    for address in hostile_addresses:
        assert _versions(aws, f"originals/{address}") == 0
        assert _versions(aws, f"variants/{address}/") == 0
    assert _versions(aws, f"originals/{addresses[kept.image_id]}") == 1

    # CloudFront recorded the invalidation the job asked for.
    cloudfront = boto3.client("cloudfront", endpoint_url=aws.endpoint_url, region_name=aws.region)
    recorded = cloudfront.get_invalidation(DistributionId=distribution, Id=invalidation["id"])
    batch_paths = recorded["Invalidation"]["InvalidationBatch"]["Paths"]["Items"]
    assert sorted(batch_paths) == sorted(invalidation["paths"])

    # Subscribers heard of both, each in its project.
    blocked_events = [
        json.loads(m["Body"]) for m in _drain(aws, aws.events_queue_url, want=2, within=15)
    ]
    assert sorted((e["type"], e["data"]["project_id"]) for e in blocked_events) == [
        ("image.blocked", "default"),
        ("image.blocked", "shop"),
    ]
    assert all(e["data"]["sequence"] == 2 for e in blocked_events)
    assert all(e["data"]["placeholder"] is None for e in blocked_events)

    # The bytes cannot come back, in any project, until unblocked.
    again = await _upload(upload_service, delivery_service, theirs, hostile)
    assert (again.status, again.failure_reason) == (image_pb2.IMAGE_STATUS_FAILED, "BLOCKED")
    undone = await admin(
        "unblock",
        answer["sha256"],
        "--reason",
        "ticket T-1: appeal granted",
        "--json",
        database_url=database_url,
    )
    assert undone.code == 0, undone.err
    assert undone.json()["images_blocked"] == 2
    back = await _upload(upload_service, delivery_service, ours, hostile)
    assert back.status == image_pb2.IMAGE_STATUS_READY
    still = await _get(delivery_service, ours, here.image_id)
    assert still.status == image_pb2.IMAGE_STATUS_BLOCKED, "unblocking brings nothing back"

    audit = await admin("audit", "--json", database_url=database_url)
    actions = [e["action"] for e in audit.json()]
    assert {"content.block", "content.unblock", "content.takedown"} <= set(actions)
