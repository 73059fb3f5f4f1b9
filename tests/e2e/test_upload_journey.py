"""The first user journey, as a client sees it: a real upload process over a socket, a real
PUT to the presigned URL, the record in Postgres, the S3 event on the queue."""

from __future__ import annotations

import json
import signal
import subprocess
from urllib.parse import unquote_plus

import asyncpg
import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from imagery.common.aws.clients import sqs_client
from imagery.common.config import AwsSettings
from imagery.devstack.aws import AwsResources
from imagery.devstack.services import ServiceProcess
from imagery.processor.adapters.sqs import SqsMessageQueue
from imagery.v1 import upload_service_pb2 as pb
from imagery.v1 import upload_service_pb2_grpc as pb_grpc
from tests import grpc_auth

pytestmark = pytest.mark.e2e

PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"
    b"\x00\x00\x00\rIDATx\x9cc\xf8\xcf\xc0\xf0\x1f\x00\x05\x00\x01\xff\x89\x99=\x1d\x00\x00\x00\x00IEND\xaeB`\x82"
)


async def _events(
    aws_settings: AwsSettings, aws: AwsResources, rounds: int = 10
) -> list[dict[str, object]]:
    records: list[dict[str, object]] = []
    async with sqs_client(aws_settings) as client:
        queue = SqsMessageQueue(client, aws.queue_url)
        for _ in range(rounds):
            messages = await queue.receive(wait_seconds=1)
            for message in messages:
                records += json.loads(message.body).get("Records", [])
            if records:
                break
    return records


async def test_create_upload_url_put_and_event(
    upload_service: ServiceProcess,
    database_url: str,
    aws: AwsResources,
    aws_settings: AwsSettings,
    api_key: str,
) -> None:
    async with grpc_auth.channel(f"127.0.0.1:{upload_service.port}", api_key) as channel:
        ticket = await pb_grpc.UploadServiceStub(channel).CreateUploadUrl(
            pb.CreateUploadUrlRequest(content_type="image/png", file_name="pixel.png")
        )
    assert ticket.upload_method == "PUT"
    assert dict(ticket.required_headers) == {"Content-Type": "image/png"}
    assert "X-Amz-SignedHeaders=content-type%3Bhost" in ticket.upload_url
    assert ticket.max_size_bytes == 10 * 1024 * 1024

    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow("SELECT * FROM image_records WHERE id = $1", ticket.image_id)
        assert row is not None, "the record exists before the client uploads"
        assert (row["status"], row["size_bytes"], row["object_key"]) == (
            "pending",
            None,
            f"uploads/{ticket.image_id}",
        )
        assert row["file_name"] == "pixel.png"
        assert row["project_id"] == "default", "the image belongs to the key's project"
    finally:
        await conn.close()

    async with httpx.AsyncClient() as http:
        put = await http.put(ticket.upload_url, content=PNG, headers=dict(ticket.required_headers))
    assert put.status_code == 200

    events = await _events(aws_settings, aws)
    keys = [unquote_plus(e["s3"]["object"]["key"]) for e in events]  # type: ignore[index]
    assert keys == [f"uploads/{ticket.image_id}"]
    assert events[0]["eventName"] == "ObjectCreated:Put"


async def test_bad_input_is_invalid_argument_with_a_field_violation(
    upload_service: ServiceProcess, database_url: str, api_key: str
) -> None:
    async with grpc_auth.channel(f"127.0.0.1:{upload_service.port}", api_key) as channel:
        stub = pb_grpc.UploadServiceStub(channel)
        for request, field, reason in [
            (
                pb.CreateUploadUrlRequest(content_type="image/jpeg;text/html", file_name="a.jpg"),
                "content_type",
                "UNSUPPORTED_CONTENT_TYPE",
            ),
            (
                pb.CreateUploadUrlRequest(content_type="image/svg+xml", file_name="a.svg"),
                "content_type",
                "UNSUPPORTED_CONTENT_TYPE",
            ),
            (
                pb.CreateUploadUrlRequest(content_type="image/png", file_name="a\nb.png"),
                "file_name",
                "INVALID_FILE_NAME",
            ),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.CreateUploadUrl(request)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            status = rpc_status.from_call(caught.value)  # type: ignore[arg-type]
            assert status is not None
            info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
            assert status.details[0].Unpack(info) and status.details[1].Unpack(bad)
            assert info.reason == reason
            assert [v.field for v in bad.field_violations] == [field]
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM image_records") == 0, (
            "bad input changes nothing"
        )
    finally:
        await conn.close()


def test_grpcurl_works_through_reflection(
    upload_service: ServiceProcess, grpcurl: str, api_key: str
) -> None:
    """Reflection and health answer without credentials; the RPC itself needs the key."""
    address = f"127.0.0.1:{upload_service.port}"
    listed = subprocess.run(
        [grpcurl, "-plaintext", address, "list"], capture_output=True, text=True, check=True
    )
    assert {"imagery.v1.UploadService", "grpc.health.v1.Health"} <= set(listed.stdout.split())
    create = [
        "-d",
        '{"content_type": "image/webp", "file_name": "x.webp"}',
        address,
        "imagery.v1.UploadService/CreateUploadUrl",
    ]
    refused = subprocess.run(
        [grpcurl, "-plaintext", *create], capture_output=True, text=True, check=False
    )
    assert refused.returncode != 0 and "Code: Unauthenticated" in refused.stderr, refused.stderr
    called = subprocess.run(
        [grpcurl, "-plaintext", "-H", f"authorization: Bearer {api_key}", *create],
        capture_output=True,
        text=True,
        check=True,
    )
    answer = json.loads(called.stdout)
    assert answer["required_headers"] == {"Content-Type": "image/webp"}
    assert answer["upload_url"].startswith(f"{upload_service.env['AWS_ENDPOINT_URL']}/")
    health = subprocess.run(
        [
            grpcurl,
            "-plaintext",
            "-d",
            '{"service": "imagery.v1.UploadService"}',
            address,
            "grpc.health.v1.Health/Check",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(health.stdout)["status"] == "SERVING"


def test_sigterm_stops_the_service_cleanly(upload_service: ServiceProcess) -> None:
    assert upload_service.proc is not None
    upload_service.proc.send_signal(signal.SIGTERM)
    assert upload_service.proc.wait(15) == 0
    assert "shutting down" in upload_service.log_path.read_text()


def test_a_missing_setting_stops_start_up_with_a_clear_message(tmp_path: object) -> None:
    import os
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "S3_BUCKET")}
    env.update({"AWS_REGION": "us-east-1", "S3_BUCKET": "b"})
    result = subprocess.run(
        [sys.executable, "-m", "imagery.upload"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "DATABASE_URL is not set" in result.stderr
    assert "Traceback" not in result.stderr
