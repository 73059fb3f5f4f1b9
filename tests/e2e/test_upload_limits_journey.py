"""Limits one upload asks for (issue 19, part 6), as a client sees them: the real upload,
delivery and processor processes over gRPC, real images PUT to the presigned URLs. The
images are all within the project's limits; only the upload's own limits fail them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from imagery.devstack.aws import AwsResources
from imagery.devstack.pipeline import Pipeline
from imagery.devstack.services import ServiceProcess
from imagery.v1 import delivery_service_pb2 as dpb
from imagery.v1 import delivery_service_pb2_grpc as dgrpc
from imagery.v1 import image_pb2
from imagery.v1 import upload_service_pb2 as pb
from imagery.v1 import upload_service_pb2_grpc as pb_grpc
from tests import grpc_auth, images

pytestmark = pytest.mark.e2e
READY, FAILED = image_pb2.IMAGE_STATUS_READY, image_pb2.IMAGE_STATUS_FAILED


@pytest.fixture
def processor(database_url: str, aws: AwsResources, tmp_path: Path) -> Iterator[Pipeline]:
    pipeline = Pipeline(database_url, aws, tmp_path)
    process = pipeline.processor()
    yield pipeline
    process.stop()


class Client:
    def __init__(self, upload: ServiceProcess, delivery: ServiceProcess, key: str) -> None:
        self.upload_target = f"127.0.0.1:{upload.port}"
        self.delivery_target = f"127.0.0.1:{delivery.port}"
        self.key = key

    async def create(self, content_type: str, **fields: Any) -> pb.CreateUploadUrlResponse:
        request = pb.CreateUploadUrlRequest(content_type=content_type, file_name="f", **fields)
        async with grpc_auth.channel(self.upload_target, self.key) as channel:
            answer: pb.CreateUploadUrlResponse = await pb_grpc.UploadServiceStub(
                channel
            ).CreateUploadUrl(request)
        return answer

    async def upload(self, body: bytes, content_type: str, **fields: Any) -> image_pb2.Image:
        """Create, PUT, and wait for the processor to end the upload."""
        ticket = await self.create(content_type, **fields)
        async with httpx.AsyncClient() as http:
            put = await http.put(
                ticket.upload_url, content=body, headers=dict(ticket.required_headers)
            )
        assert put.status_code == 200, put.text
        async with grpc_auth.channel(self.delivery_target, self.key) as channel:
            stub = dgrpc.DeliveryServiceStub(channel)
            for _ in range(300):
                answer = await stub.GetImage(dpb.GetImageRequest(image_id=ticket.image_id))
                image: image_pb2.Image = answer.image
                if image.status in (READY, FAILED):
                    return image
                await asyncio.sleep(0.2)
        raise AssertionError(f"{ticket.image_id} never ended: {image}")


@pytest.fixture
def client(
    upload_service: ServiceProcess, delivery_service: ServiceProcess, api_key: str
) -> Client:
    return Client(upload_service, delivery_service, api_key)


def _outcome(image: image_pb2.Image) -> tuple[int, str]:
    return image.status, image.failure_reason


async def test_an_upload_outside_its_own_limits_fails_and_one_within_them_is_ready(
    client: Client, processor: Pipeline
) -> None:
    body = images.png(64, 48)
    within = await client.upload(
        body,
        "image/png",
        limits=pb.UploadLimits(max_width=64, max_height=48, max_pixels=64 * 48, max_frames=1),
    )
    assert _outcome(within) == (READY, "")
    assert (within.width, within.height) == (64, 48)

    # the same bytes again (known content, linked without a job) and new bytes (a job)
    assert _outcome(
        await client.upload(body, "image/png", limits=pb.UploadLimits(max_width=32))
    ) == (FAILED, "DIMENSIONS_EXCEEDED")
    assert _outcome(
        await client.upload(images.png(64, 49), "image/png", limits=pb.UploadLimits(max_height=48))
    ) == (FAILED, "DIMENSIONS_EXCEEDED")
    assert _outcome(
        await client.upload(
            images.png(65, 48), "image/png", limits=pb.UploadLimits(max_pixels=64 * 48)
        )
    ) == (FAILED, "DIMENSIONS_EXCEEDED")


async def test_animation_refused_when_the_upload_disallows_it(
    client: Client, processor: Pipeline
) -> None:
    animated = images.gif(frames=3)
    # within the project's limits: READY, and its content is known from here on
    assert _outcome(await client.upload(animated, "image/gif")) == (READY, "")

    still_only = pb.UploadLimits(allow_animation=False)
    assert _outcome(await client.upload(animated, "image/gif", limits=still_only)) == (
        FAILED,
        "DIMENSIONS_EXCEEDED",
    )
    assert _outcome(
        await client.upload(images.gif(frames=4), "image/gif", limits=pb.UploadLimits(max_frames=3))
    ) == (FAILED, "DIMENSIONS_EXCEEDED")
    assert _outcome(
        await client.upload(animated, "image/gif", limits=pb.UploadLimits(max_frames=3))
    ) == (READY, "")
    still = await client.upload(images.gif(frames=1), "image/gif", limits=still_only)
    assert _outcome(still) == (READY, "")


async def _refused(call: Any) -> tuple[grpc.StatusCode, str, list[tuple[str, str]]]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    status = rpc_status.from_call(caught.value)  # type: ignore[arg-type]
    assert status is not None
    info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    violations: list[tuple[str, str]] = []
    for detail in status.details:
        if detail.Unpack(info):
            continue
        if detail.Unpack(bad):
            violations = [(v.field, v.description) for v in bad.field_violations]
    return caught.value.code(), info.reason, violations


async def test_limits_looser_than_the_projects_are_refused(client: Client) -> None:
    for limits, field, project_value in (
        (pb.UploadLimits(max_width=10_001), "limits.max_width", "10000"),
        (pb.UploadLimits(max_height=20_000), "limits.max_height", "10000"),
        (pb.UploadLimits(max_pixels=40_000_001), "limits.max_pixels", "40000000"),
        (pb.UploadLimits(max_frames=101), "limits.max_frames", "100"),
    ):
        code, reason, violations = await _refused(client.create("image/png", limits=limits))
        assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
        assert [f for f, _ in violations] == [field]
        assert (
            f"the project's {field.removeprefix('limits.')} of {project_value}"
            in (violations[0][1])
        )
    # the project's own values, and 0 ("the project's"), are accepted
    await client.create("image/png", limits=pb.UploadLimits(max_width=10_000, max_frames=0))


async def test_a_request_id_with_other_limits_is_another_request(client: Client) -> None:
    request_id = str(uuid.uuid4())
    first = await client.create(
        "image/png", request_id=request_id, limits=pb.UploadLimits(max_width=32)
    )
    again = await client.create(
        "image/png", request_id=request_id, limits=pb.UploadLimits(max_width=32)
    )
    assert again.image_id == first.image_id
    for other in (pb.UploadLimits(max_width=33), None):
        fields = {} if other is None else {"limits": other}
        code, reason, _ = await _refused(
            client.create("image/png", request_id=request_id, **fields)
        )
        assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "REQUEST_ID_REUSED")
