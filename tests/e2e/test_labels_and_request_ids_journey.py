"""Labels, retried CreateUploadUrl calls (AIP-155 request ids) and UpdateImage, as a client
sees them: the real upload, delivery and processor processes over gRPC, real images PUT to
the presigned URLs, the project's usage as ProjectService reports it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import httpx
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from imagery.devstack.aws import AwsResources
from imagery.devstack.pipeline import Pipeline
from imagery.devstack.services import ServiceProcess
from imagery.v1 import delivery_service_pb2 as dpb
from imagery.v1 import delivery_service_pb2_grpc as dgrpc
from imagery.v1 import image_pb2, project_pb2
from imagery.v1 import project_service_pb2 as ppb
from imagery.v1 import project_service_pb2_grpc as pgrpc
from imagery.v1 import upload_service_pb2 as pb
from imagery.v1 import upload_service_pb2_grpc as pb_grpc
from tests import grpc_auth, images

pytestmark = pytest.mark.e2e
LABELS = {"team": "web", "env": "prod"}


@pytest.fixture
def processor(database_url: str, aws: AwsResources, tmp_path: Path) -> Iterator[Pipeline]:
    pipeline = Pipeline(database_url, aws, tmp_path)
    process = pipeline.processor()
    yield pipeline
    process.stop()


class Client:
    """A team's service: its key, the upload and delivery endpoints, and the operators' key
    for reading the project's usage."""

    def __init__(self, upload: ServiceProcess, delivery: ServiceProcess, keys: dict[str, str]):
        self.upload_target = f"127.0.0.1:{upload.port}"
        self.delivery_target = f"127.0.0.1:{delivery.port}"
        self.key = keys["IMAGERY_API_KEY"]
        self.admin_key = keys["IMAGERY_ADMIN_KEY"]

    async def create(self, **fields: Any) -> pb.CreateUploadUrlResponse:
        fields = {"content_type": "image/png", "file_name": "cat.png", **fields}
        async with grpc_auth.channel(self.upload_target, self.key) as channel:
            answer: pb.CreateUploadUrlResponse = await pb_grpc.UploadServiceStub(
                channel
            ).CreateUploadUrl(pb.CreateUploadUrlRequest(**fields))
        return answer

    async def update(
        self, image_id: str, labels: dict[str, str], paths: list[str], key: str | None = None
    ) -> image_pb2.Image:
        request = pb.UpdateImageRequest(
            image=image_pb2.Image(image_id=image_id, labels=labels),
            update_mask=FieldMask(paths=paths),
        )
        async with grpc_auth.channel(self.upload_target, key or self.key) as channel:
            answer = await pb_grpc.UploadServiceStub(channel).UpdateImage(request)
        image: image_pb2.Image = answer.image
        return image

    async def get(self, image_id: str) -> image_pb2.Image:
        async with grpc_auth.channel(self.delivery_target, self.key) as channel:
            answer = await dgrpc.DeliveryServiceStub(channel).GetImage(
                dpb.GetImageRequest(image_id=image_id)
            )
        image: image_pb2.Image = answer.image
        return image

    async def wait_status(self, image_id: str, status: int, within: float = 60) -> image_pb2.Image:
        for _ in range(int(within / 0.2)):
            image = await self.get(image_id)
            if image.status == status:
                return image
            await asyncio.sleep(0.2)
        raise AssertionError(f"{image_id} never reached {status}: {image}")

    async def usage(self) -> project_pb2.ProjectUsage:
        async with grpc_auth.channel(self.upload_target, self.admin_key) as channel:
            answer = await pgrpc.ProjectServiceStub(channel).GetProject(
                ppb.GetProjectRequest(name="projects/default")
            )
        usage: project_pb2.ProjectUsage = answer.project.usage
        return usage

    async def other_projects_key(self) -> str:
        async with grpc_auth.channel(self.upload_target, self.admin_key) as channel:
            projects = pgrpc.ProjectServiceStub(channel)
            await projects.CreateProject(
                ppb.CreateProjectRequest(
                    project_id="team-b", project=project_pb2.Project(display_name="Team B")
                )
            )
            created = await projects.CreateApiKey(
                ppb.CreateApiKeyRequest(
                    parent="projects/team-b",
                    api_key=project_pb2.ApiKey(display_name="b", scopes=["images.create"]),
                )
            )
        key: str = created.key
        return key


@pytest.fixture
def client(
    upload_service: ServiceProcess, delivery_service: ServiceProcess, keys: dict[str, str]
) -> Client:
    return Client(upload_service, delivery_service, keys)


async def _refused(call: Any) -> tuple[grpc.StatusCode, str, list[str]]:
    """The status code, ErrorInfo reason and field violations a call fails with."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    status = rpc_status.from_call(caught.value)  # type: ignore[arg-type]
    assert status is not None
    info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    fields: list[str] = []
    for detail in status.details:
        if detail.Unpack(info):
            continue
        if detail.Unpack(bad):
            fields = [v.field for v in bad.field_violations]
    return caught.value.code(), info.reason, fields


async def _count(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        count: int = await conn.fetchval("SELECT count(*) FROM image_records")
    finally:
        await conn.close()
    return count


async def test_a_labelled_upload_retried_stays_one_image_through_processing(
    client: Client, processor: Pipeline, database_url: str
) -> None:
    request_id = str(uuid.uuid4())
    first = await client.create(labels=LABELS, request_id=request_id)
    retry = await client.create(labels=dict(reversed(LABELS.items())), request_id=request_id)
    assert retry.image_id == first.image_id
    assert f"/uploads/{first.image_id}?" in retry.upload_url

    body = images.png(320, 200)
    async with httpx.AsyncClient() as http:  # the retry's URL is the one the client has
        put = await http.put(retry.upload_url, content=body, headers=dict(retry.required_headers))
    assert put.status_code == 200, put.text
    ready = await client.wait_status(first.image_id, image_pb2.IMAGE_STATUS_READY)
    assert dict(ready.labels) == LABELS
    assert (ready.width, ready.height, ready.detected_format) == (320, 200, "png")

    late = await client.create(labels=LABELS, request_id=request_id)
    assert late.image_id == first.image_id, "after processing, still the same image"
    assert (await client.get(first.image_id)).status == image_pb2.IMAGE_STATUS_READY
    usage = await client.usage()
    assert (usage.images, usage.uploads_today) == (1, 1), "retries count nothing"
    assert await _count(database_url) == 1

    code, reason, fields = await _refused(
        client.create(labels=LABELS, request_id=request_id, file_name="dog.png")
    )
    assert (code, reason, fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "REQUEST_ID_REUSED",
        ["request_id"],
    )
    assert await _count(database_url) == 1


async def test_twenty_concurrent_identical_calls_make_one_image(
    client: Client, database_url: str
) -> None:
    request_id = str(uuid.uuid4())
    answers = await asyncio.gather(
        *(client.create(labels=LABELS, request_id=request_id) for _ in range(20))
    )
    assert len({a.image_id for a in answers}) == 1
    assert await _count(database_url) == 1
    usage = await client.usage()
    assert (usage.images, usage.uploads_today) == (1, 1)
    assert dict((await client.get(answers[0].image_id)).labels) == LABELS


async def test_bad_labels_and_request_ids_are_refused_and_create_nothing(
    client: Client, database_url: str
) -> None:
    for fields, field in (
        ({"labels": {"Bad Key": "x"}}, 'labels["Bad Key"]'),
        ({"labels": {"team": "Web"}}, 'labels["team"]'),
        ({"labels": {f"k{i}": "v" for i in range(65)}}, "labels"),
        ({"request_id": "not a request id"}, "request_id"),
        ({"request_id": "x" * 65}, "request_id"),
    ):
        code, reason, violations = await _refused(client.create(**fields))
        assert (code, reason, violations) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
            [field],
        )
    assert await _count(database_url) == 0


async def test_a_retry_after_the_image_was_deleted_is_not_found(
    client: Client, database_url: str
) -> None:
    first = await client.create(request_id="job-42")
    async with grpc_auth.channel(client.upload_target, client.key) as channel:
        await pb_grpc.UploadServiceStub(channel).DeleteImage(
            pb.DeleteImageRequest(image_id=first.image_id)
        )
    code, reason, _ = await _refused(client.create(request_id="job-42"))
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "IMAGE_NOT_FOUND")
    assert await _count(database_url) == 0


async def test_update_image_changes_labels_and_refuses_what_it_must(client: Client) -> None:
    image_id = (await client.create(labels=LABELS)).image_id
    updated = await client.update(image_id, {"team": "app"}, ["labels"])
    assert dict(updated.labels) == {"team": "app"}
    assert updated.image_id == image_id and updated.status == image_pb2.IMAGE_STATUS_PENDING
    shown = await client.get(image_id)
    assert dict(shown.labels) == {"team": "app"}
    assert shown.update_time == updated.update_time
    assert shown.update_time.ToDatetime() > shown.create_time.ToDatetime()
    assert dict((await client.update(image_id, {}, ["*"])).labels) == {}
    await client.update(image_id, {"team": "app"}, ["labels"])

    other_key = await client.other_projects_key()
    for call, expected in (
        (client.update(image_id, {"a": "b"}, []), ("INVALID_ARGUMENT", ["update_mask"])),
        (client.update(image_id, {"a": "b"}, ["file_name"]), ("INVALID_ARGUMENT", ["update_mask"])),
        (
            client.update(image_id, {"Bad": "b"}, ["labels"]),
            ("INVALID_ARGUMENT", ['image.labels["Bad"]']),
        ),
        (client.update("nope", {"a": "b"}, ["labels"]), ("INVALID_IMAGE_ID", ["image.image_id"])),
    ):
        code, reason, fields = await _refused(call)
        assert (code, (reason, fields)) == (grpc.StatusCode.INVALID_ARGUMENT, expected)
    for call in (
        client.update(image_id, {"a": "b"}, ["labels"], key=other_key),
        client.update("01" + "0" * 24, {"a": "b"}, ["labels"]),
    ):
        code, reason, _ = await _refused(call)
        assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "IMAGE_NOT_FOUND")
    assert dict((await client.get(image_id)).labels) == {"team": "app"}, "nothing changed"


def test_the_readme_grpcurl_calls(
    upload_service: ServiceProcess, grpcurl: str, api_key: str
) -> None:
    """CreateUploadUrl with labels and a request id, retried, and UpdateImage, with JSON as
    grpcurl sends it (it writes a field mask as `{"paths": [...]}`)."""
    address = f"127.0.0.1:{upload_service.port}"

    def call(method: str, body: dict[str, Any]) -> dict[str, Any]:
        done = subprocess.run(
            [
                *(grpcurl, "-plaintext", "-H", f"authorization: Bearer {api_key}"),
                *("-d", json.dumps(body), address, f"imagery.v1.UploadService/{method}"),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        answer: dict[str, Any] = json.loads(done.stdout)
        return answer

    create = {
        "content_type": "image/png",
        "file_name": "cat.png",
        "labels": {"team": "web", "env": "prod"},
        "request_id": "0f8fad5b-d9cb-469f-a165-70867728950e",
    }
    first, again = call("CreateUploadUrl", create), call("CreateUploadUrl", create)
    assert first["image_id"] == again["image_id"]
    updated = call(
        "UpdateImage",
        {
            "image": {"image_id": first["image_id"], "labels": {"team": "app"}},
            "update_mask": {"paths": ["labels"]},
        },
    )
    assert updated["image"]["labels"] == {"team": "app"}
    assert updated["image"]["image_id"] == first["image_id"]


async def test_the_processor_prunes_request_ids_past_their_day(
    database_url: str, aws: AwsResources, tmp_path: Path
) -> None:
    """Housekeeping forgets request ids older than 24 hours and keeps the others."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO upload_requests (project_id, request_id, fingerprint, image_id,"
            " created_at) VALUES ('default', 'old', 'f', $1, now() - interval '24 hours 1 second'),"
            " ('default', 'young', 'f', $1, now() - interval '23 hours')",
            "01" + "0" * 24,
        )
        process = Pipeline(database_url, aws, tmp_path).processor()
        try:
            for _ in range(100):
                kept = await conn.fetchval("SELECT array_agg(request_id) FROM upload_requests")
                if kept == ["young"]:
                    break
                await asyncio.sleep(0.1)
        finally:
            process.stop()
        assert kept == ["young"]
    finally:
        await conn.close()
