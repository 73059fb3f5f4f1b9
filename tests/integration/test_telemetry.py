"""One trace from CreateUploadUrl to ready, across the asynchronous hop, with the in-memory
exporter; metrics read in memory. Real upload server on a socket, real Postgres, S3 and SQS."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from imagery.common.aws.clients import s3_client, sqs_client
from imagery.common.config import Settings
from imagery.common.db.images import PostgresImageRepository
from imagery.common.telemetry import configure_telemetry
from imagery.devstack.aws import AwsResources
from imagery.processor.adapters.isolation import IsolatedRunner, JobLimits
from imagery.processor.adapters.postgres import PostgresOutcomes
from imagery.processor.adapters.s3 import S3ObjectStore
from imagery.processor.adapters.sqs import SqsMessageQueue
from imagery.processor.consumer import Consumer
from imagery.processor.imaging import Limits
from imagery.processor.use_cases.process_upload import UploadProcessor
from imagery.upload.bootstrap import build_server
from imagery.upload.config import UploadSettings
from imagery.v1 import upload_service_pb2 as pb
from imagery.v1 import upload_service_pb2_grpc as pb_grpc
from tests import grpc_auth, images

pytestmark = pytest.mark.integration
SPANS = InMemorySpanExporter()
METRICS = InMemoryMetricReader()


@pytest.fixture(scope="module", autouse=True)
def telemetry() -> None:
    configure_telemetry(
        "test", span_processors=[SimpleSpanProcessor(SPANS)], metric_readers=[METRICS]
    )


@pytest.fixture
async def upload_port(settings: Settings) -> AsyncIterator[int]:
    async with AsyncExitStack() as stack:
        server = await build_server(UploadSettings(settings, 86_400), stack)
        port = await server.start(0, host="127.0.0.1")
        yield port
        await server.stop()


async def _create_and_put(port: int, body: bytes, content_type: str, key: str) -> str:
    async with grpc_auth.channel(f"127.0.0.1:{port}", key) as channel:
        ticket = await pb_grpc.UploadServiceStub(channel).CreateUploadUrl(
            pb.CreateUploadUrlRequest(content_type=content_type, file_name="secret-name.jpg")
        )
    async with httpx.AsyncClient() as http:
        assert (
            await http.put(ticket.upload_url, content=body, headers=dict(ticket.required_headers))
        ).status_code == 200
    return ticket.image_id


async def _consume_once(
    settings: Settings, aws: AwsResources, pool: Any, image_ids: set[str]
) -> None:
    """The real consumer and processor, in this process, until these uploads are handled."""
    import asyncio

    runner = IsolatedRunner(2, JobLimits())
    try:
        async with s3_client(settings.aws) as s3, sqs_client(settings.aws) as sqs:
            process = UploadProcessor(
                PostgresImageRepository(pool),
                PostgresOutcomes(pool),
                S3ObjectStore(s3, aws.bucket),
                runner,
                limits=Limits(),
                max_upload_bytes=settings.max_upload_bytes,
                claim_stale_seconds=300,
            )
            consumer = Consumer(
                SqsMessageQueue(sqs, aws.queue_url),
                process,
                bucket=aws.bucket,
                concurrency=2,
                visibility_timeout=60,
                wait_seconds=1,
            )
            stop = asyncio.Event()

            async def until_done() -> None:
                for _ in range(300):
                    done = {
                        _attrs(s).get("image.id")
                        for s in SPANS.get_finished_spans()
                        if s.name == "imagery.process_upload"
                    }
                    if image_ids <= done:
                        break
                    await asyncio.sleep(0.1)
                stop.set()

            await asyncio.gather(consumer.run(stop, grace_seconds=5), until_done())
    finally:
        runner.close()


def _attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def _spans(name: str) -> list[ReadableSpan]:
    return [s for s in SPANS.get_finished_spans() if s.name == name]


def _processing(image_id: str) -> ReadableSpan:
    (span,) = [s for s in _spans("imagery.process_upload") if _attrs(s).get("image.id") == image_id]
    return span


async def test_processing_links_back_to_the_upload_request(
    upload_port: int, settings: Settings, aws: AwsResources, pool: Any, api_key: str
) -> None:
    SPANS.clear()
    good = await _create_and_put(upload_port, images.jpeg(640, 480), "image/jpeg", api_key)
    bad = await _create_and_put(upload_port, images.html(), "image/jpeg", api_key)
    await _consume_once(settings, aws, pool, {good, bad})

    (request, _) = _spans("/imagery.v1.UploadService/CreateUploadUrl")[:2]
    assert request.kind is SpanKind.SERVER
    processing = _processing(good)
    assert processing.kind is SpanKind.CONSUMER
    linked = {link.context.trace_id for link in processing.links}
    upload_traces = {
        s.context.trace_id for s in _spans("/imagery.v1.UploadService/CreateUploadUrl")
    }
    assert linked and linked <= upload_traces, (
        "the processing span links to the CreateUploadUrl trace"
    )
    assert _attrs(processing)["imagery.outcome"] == "ready"
    assert _attrs(processing)["image.format"] == "jpeg"
    assert _attrs(processing)["image.size_bytes"] > 0

    failed = _processing(bad)
    assert _attrs(failed)["imagery.failure_reason"] == "UNSUPPORTED_FORMAT"
    assert failed.status.status_code is StatusCode.ERROR

    inside = [
        s for s in SPANS.get_finished_spans() if s.context.trace_id == processing.context.trace_id
    ]
    aws_calls = {s.name for s in inside if _attrs(s).get("rpc.system") == "aws-api"}
    assert {"S3.GetObject", "S3.PutObject", "S3.DeleteObject"} <= aws_calls
    assert "S3.HeadObject" not in aws_calls, "one ranged GET, no HEAD first"
    assert any(_attrs(s).get("db.system") == "postgresql" for s in inside), (
        "SQL statements are spans"
    )


def _points(name: str) -> list[Any]:
    data = METRICS.get_metrics_data()
    assert data is not None
    return [
        p
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == name
        for p in m.data.data_points
    ]


def test_metrics_count_jobs_by_outcome_and_reason_and_time_rpcs() -> None:
    jobs = {
        (_attrs(p)["outcome"], _attrs(p)["reason"]): p.value
        for p in _points("imagery.processor.jobs")
    }
    assert jobs[("ready", "")] >= 1
    assert jobs[("failed", "UNSUPPORTED_FORMAT")] >= 1
    stages = {_attrs(p)["stage"] for p in _points("imagery.processor.stage.duration")}
    assert {"download", "verify", "commit"} <= stages
    assert _points("imagery.processor.upload_to_ready")
    rpcs = [
        p
        for p in _points("rpc.server.call.duration")
        if _attrs(p)["rpc.method"] == "CreateUploadUrl"
    ]
    assert rpcs and rpcs[0].attributes["rpc.grpc.status_code"] == 0 and rpcs[0].count >= 2
    assert rpcs[0].explicit_bounds[0] == 0.005 and 0.25 in rpcs[0].explicit_bounds, "seconds"
