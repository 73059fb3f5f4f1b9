"""The processor as it runs in production: a real process consuming real S3 events from the
local SQS, real Postgres, real (and hostile) files made by the tests."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from imagery.devstack.aws import AwsResources
from imagery.devstack.fixtures import AwsServer, allow_connections
from imagery.devstack.pipeline import Pipeline
from imagery.devstack.services import ServiceProcess, grpc_serving
from tests import images

pytestmark = pytest.mark.e2e
MIB = 1024 * 1024


@pytest.fixture
def pipeline(database_url: str, aws: AwsResources, tmp_path: Path) -> Pipeline:
    return Pipeline(database_url, aws, tmp_path)


@pytest.fixture
def processor(pipeline: Pipeline) -> Iterator[ServiceProcess]:
    process = pipeline.processor()
    yield process
    process.stop()


async def test_good_images_become_ready(pipeline: Pipeline, processor: ServiceProcess) -> None:
    cases = {
        await pipeline.submit(images.jpeg(640, 480, orientation=6), "image/jpeg"): (
            "jpeg",
            480,
            640,
        ),
        await pipeline.submit(images.png(300, 200, alpha=True), "image/png"): ("png", 300, 200),
        await pipeline.submit(images.webp(120, 90), "image/webp"): ("webp", 120, 90),
        await pipeline.submit(images.gif(4), "image/gif"): ("gif", 16, 16),
        await pipeline.submit(images.avif(64, 32), "image/avif"): ("avif", 64, 32),
    }
    records = await pipeline.wait_terminal(list(cases))
    for image_id, (fmt, width, height) in cases.items():
        r = records[image_id]
        assert (r["status"], r["detected_format"], r["width"], r["height"]) == (
            "ready",
            fmt,
            width,
            height,
        ), image_id
        assert r["size_bytes"] > 0 and len(r["sha256"]) == 64
    assert grpc_serving(processor.port)
    await pipeline.wait_queue_empty()
    await pipeline.assert_invariants()


async def test_hostile_inputs_each_fail_with_their_reason_and_leave_nothing(
    pipeline: Pipeline, processor: ServiceProcess
) -> None:
    cases = {
        await pipeline.submit(images.random_bytes(), "image/jpeg"): "UNSUPPORTED_FORMAT",
        await pipeline.submit(images.html(), "image/jpeg"): "UNSUPPORTED_FORMAT",
        await pipeline.submit(images.tiff(), "image/jpeg"): "UNSUPPORTED_FORMAT",
        await pipeline.submit(images.bmp(), "image/jpeg"): "UNSUPPORTED_FORMAT",
        await pipeline.submit(images.psd(), "image/jpeg"): "UNSUPPORTED_FORMAT",
        await pipeline.submit(images.truncated_jpeg(), "image/jpeg"): "CORRUPT",
        await pipeline.submit(images.pixel_flood_png(), "image/png"): "DIMENSIONS_EXCEEDED",
        await pipeline.submit(images.gif(3000, (1, 1)), "image/gif"): "DIMENSIONS_EXCEEDED",
        await pipeline.submit(b"", "image/png"): "EMPTY",
        await pipeline.submit(b"\xff\xd8\xff" + b"\0" * (10 * MIB), "image/jpeg"): "TOO_LARGE",
        await pipeline.submit(images.png(), "image/jpeg"): "CONTENT_TYPE_MISMATCH",
        await pipeline.submit(images.jpeg_with_malformed_exif(), "image/jpeg"): "UNPROCESSABLE",
    }
    good = await pipeline.submit(images.jpeg(), "image/jpeg")
    records = await pipeline.wait_terminal([*cases, good])
    assert {i: (records[i]["status"], records[i]["failure_reason"]) for i in cases} == {
        i: ("failed", reason) for i, reason in cases.items()
    }
    assert records[good]["status"] == "ready", "hostile files cost their own jobs only"
    too_large = next(i for i, reason in cases.items() if reason == "TOO_LARGE")
    assert records[too_large]["size_bytes"] == 10 * MIB + 3
    await pipeline.wait_queue_empty()
    await pipeline.assert_invariants()
    assert processor.proc is not None and processor.proc.poll() is None, "the worker survived"


async def test_queue_noise_is_dropped(pipeline: Pipeline, processor: ServiceProcess) -> None:
    pipeline.sqs.send_message(QueueUrl=pipeline.aws.queue_url, MessageBody="this is not json")
    pipeline.sqs.send_message(
        QueueUrl=pipeline.aws.queue_url, MessageBody=json.dumps({"Event": "s3:TestEvent"})
    )
    pipeline.s3.put_object(Bucket=pipeline.aws.bucket, Key="uploads/not-an-image-id", Body=b"x")
    await pipeline.wait_queue_empty()
    log = processor.log_path.read_text()
    assert "body is not JSON" in log and "is not uploads/<image id>" in log


async def test_the_same_event_five_times_at_once_has_one_effect(pipeline: Pipeline) -> None:
    image_id = await pipeline.submit(images.jpeg(800, 600), "image/jpeg")
    await asyncio.sleep(0.5)
    received = pipeline.sqs.receive_message(
        QueueUrl=pipeline.aws.queue_url, WaitTimeSeconds=5, MaxNumberOfMessages=10
    )
    (event,) = [m for m in received["Messages"] if image_id in m["Body"]]
    for message in received["Messages"]:  # the event, and the bucket's s3:TestEvent
        pipeline.sqs.delete_message(
            QueueUrl=pipeline.aws.queue_url, ReceiptHandle=message["ReceiptHandle"]
        )
    for _ in range(5):
        pipeline.sqs.send_message(QueueUrl=pipeline.aws.queue_url, MessageBody=event["Body"])
    process = pipeline.processor(PROCESSOR_CONCURRENCY="5")
    try:
        (record,) = (await pipeline.wait_terminal([image_id])).values()
        assert record["status"] == "ready"
        await pipeline.wait_queue_empty(within=40)
        await pipeline.assert_invariants()
        outcomes = [
            json.loads(line)
            for line in process.log_path.read_text().splitlines()
            if '"upload processed"' in line
        ]
        assert [o["outcome"] for o in outcomes].count("ready") == 1
    finally:
        process.stop()


async def test_a_transient_database_outage_delays_but_loses_nothing(
    pipeline: Pipeline, processor: ServiceProcess, postgres_server: object
) -> None:
    admin = postgres_server.admin_dsn  # type: ignore[attr-defined]
    await allow_connections(pipeline.dsn, admin, False)
    try:
        image_id = await _submit_while_down(pipeline, admin)
        await asyncio.sleep(3)
    finally:
        await allow_connections(pipeline.dsn, admin, True)
    (record,) = (await pipeline.wait_terminal([image_id], within=60)).values()
    assert record["status"] == "ready"
    assert "it will be retried" in processor.log_path.read_text()
    await pipeline.wait_queue_empty(within=40)
    await pipeline.assert_invariants()


async def _submit_while_down(pipeline: Pipeline, admin: str) -> str:
    """The record is written by the (healthy) upload service before the outage; only the
    processor sees the database go away."""
    await allow_connections(pipeline.dsn, admin, True)
    image_id = await pipeline.submit(images.jpeg(), "image/jpeg")
    await allow_connections(pipeline.dsn, admin, False)
    return image_id


async def test_an_outage_spends_no_receives_and_loses_nothing(
    database_url: str, aws_server: AwsServer, tmp_path: Path, postgres_server: object
) -> None:
    aws = aws_server.new_resources(max_receive_count=2, visibility_timeout=2)
    pipeline = Pipeline(database_url, aws, tmp_path)
    admin = postgres_server.admin_dsn  # type: ignore[attr-defined]
    process = pipeline.processor()
    during = await pipeline.create_pending("image/jpeg")
    try:
        await allow_connections(database_url, admin, False)
        try:
            await pipeline.put_upload(during, images.jpeg(), "image/jpeg")
            deadline = time.monotonic() + 30
            while "receiving paused" not in process.log_path.read_text():
                assert time.monotonic() < deadline, "the processor never met the outage"
                await asyncio.sleep(0.1)
            await asyncio.sleep(6)  # three visibility timeouts: enough to dead-letter it twice
            assert pipeline.queue_counts(aws.dlq_url)[0] == 0, "nothing dead-lettered"
        finally:
            await allow_connections(database_url, admin, True)
        records = await pipeline.wait_terminal([during], within=90)
        assert records[during]["status"] == "ready", "processed once the database was back"
        assert "receiving resumed" in process.log_path.read_text()
        await pipeline.wait_queue_empty(within=30)
        assert pipeline.queue_counts(aws.dlq_url) == (0, 0)
        await pipeline.assert_invariants()
    finally:
        process.stop()


async def test_dead_letters_go_back_to_the_queue_and_end_terminal(pipeline: Pipeline) -> None:
    image_id = await pipeline.submit(images.jpeg(), "image/jpeg")
    body = await _take_the_event_of(pipeline, image_id)
    pipeline.sqs.send_message(QueueUrl=pipeline.aws.dlq_url, MessageBody=body)
    process = pipeline.processor(PROCESSOR_GC_INTERVAL_SECONDS="1")
    try:
        records = await pipeline.wait_terminal([image_id], within=60)
        assert records[image_id]["status"] == "ready"
        assert "dead letters sent back to the queue" in process.log_path.read_text()
        assert pipeline.queue_counts(pipeline.aws.dlq_url) == (0, 0)
        await pipeline.assert_invariants()
    finally:
        process.stop()


async def _until_a_job_is_running(pipeline: Pipeline, ids: list[str], within: float = 30) -> None:
    """Until the processor has claimed one of `ids`: a job is in flight."""
    deadline = time.monotonic() + within
    while not any(r["status"] == "processing" for r in (await pipeline.records(ids)).values()):
        assert time.monotonic() < deadline, f"no job started within {within} s"
        await asyncio.sleep(0.02)


async def _take_the_event_of(pipeline: Pipeline, image_id: str, within: float = 10) -> str:
    """Receive and delete the upload event that names `image_id`, as if SQS had lost it;
    returns its body."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        received = pipeline.sqs.receive_message(
            QueueUrl=pipeline.aws.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        ).get("Messages", [])
        for message in received:
            pipeline.sqs.delete_message(
                QueueUrl=pipeline.aws.queue_url, ReceiptHandle=message["ReceiptHandle"]
            )
            if image_id in message["Body"]:
                assert pipeline.queue_counts() == (0, 0), "no other copy of the event is left"
                return str(message["Body"])
    raise AssertionError(f"the upload event of {image_id} never arrived")


async def test_sigkill_mid_job_then_restart_ends_every_upload_once(
    database_url: str, aws_server: AwsServer, tmp_path: Path
) -> None:
    aws = aws_server.new_resources(visibility_timeout=3)
    pipeline = Pipeline(database_url, aws, tmp_path)
    fast_recovery = {"PROCESSOR_JOB_TIMEOUT_SECONDS": "2", "PROCESSOR_CLAIM_STALE_SECONDS": "3"}
    ids = [
        await pipeline.submit(images.jpeg(3200, 2400, quality=95), "image/jpeg") for _ in range(8)
    ]
    ids += [await pipeline.submit(images.html(), "image/jpeg") for _ in range(2)]
    claimed: list[str] = []
    for _ in range(4):
        # A job can end between seeing its claim and the kill landing; then the kill proves
        # nothing, so kill the next processor, until one dies holding a claim.
        doomed = pipeline.processor(**fast_recovery)
        await _until_a_job_is_running(pipeline, ids)
        assert doomed.proc is not None
        doomed.proc.send_signal(signal.SIGKILL)
        doomed.proc.wait(10)
        records = await pipeline.records(ids)
        claimed = [i for i, r in records.items() if r["status"] == "processing"]
        if claimed:
            break
    assert claimed, "a process died with a job in flight (its claim is still held)"
    second = pipeline.processor(**fast_recovery)
    try:
        records = await pipeline.wait_terminal(ids, within=90)
        assert {r["status"] for i, r in records.items() if i in ids[:8]} == {"ready"}
        assert {r["failure_reason"] for i, r in records.items() if i in ids[8:]} == {
            "UNSUPPORTED_FORMAT"
        }
        await pipeline.wait_queue_empty(within=60)
        await pipeline.assert_invariants()
    finally:
        second.stop()


async def test_sigterm_with_jobs_in_flight_loses_none(pipeline: Pipeline) -> None:
    first = pipeline.processor(PROCESSOR_SHUTDOWN_GRACE_SECONDS="0")
    ids = [
        await pipeline.submit(images.jpeg(2000, 1500, quality=95), "image/jpeg") for _ in range(6)
    ]
    await _until_a_job_is_running(pipeline, ids)
    assert first.proc is not None
    first.proc.send_signal(signal.SIGTERM)
    assert first.proc.wait(30) == 0
    log = first.log_path.read_text()
    assert "processor stopped" in log
    assert "released unfinished jobs" in log, "SIGTERM landed with a job in flight"
    statuses = {r["status"] for r in (await pipeline.records(ids)).values()}
    assert "processing" not in statuses, "in-flight work was finished or released"
    second = pipeline.processor()
    try:
        records = await pipeline.wait_terminal(ids, within=60)
        assert {r["status"] for r in records.values()} == {"ready"}
        await pipeline.wait_queue_empty()
        await pipeline.assert_invariants()
    finally:
        second.stop()


async def test_metrics_endpoint_and_logs_that_join_the_trace(pipeline: Pipeline) -> None:
    from imagery.devstack.procs import free_port

    metrics_port = free_port()
    process = pipeline.processor(METRICS_PORT=str(metrics_port))
    try:
        bad = await pipeline.submit(images.html(), "image/jpeg")
        good = await pipeline.submit(images.jpeg(), "image/jpeg")
        await pipeline.wait_terminal([bad, good])
        await pipeline.wait_queue_empty()
        async with httpx.AsyncClient() as http:
            exposition = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
        jobs = [
            line
            for line in exposition.splitlines()
            if line.startswith("imagery_processor_jobs_total{")
        ]
        assert any(
            'reason="UNSUPPORTED_FORMAT"' in line
            and 'outcome="failed"' in line
            and line.endswith(" 1.0")
            for line in jobs
        ), jobs
        assert any('outcome="ready"' in line for line in jobs)
        for name in (
            "imagery_processor_stage_duration_seconds",
            "imagery_processor_upload_to_ready_seconds",
            "imagery_processor_messages_in_flight",
            "imagery_processor_message_receive_count",
            "imagery_queue_messages",
        ):
            assert name in exposition, name
        lines = [
            json.loads(line)
            for line in process.log_path.read_text().splitlines()
            if line.startswith("{")
        ]
        processed = next(
            line
            for line in lines
            if line.get("message") == "upload processed" and line["image_id"] == bad
        )
        rejected = next(
            line
            for line in lines
            if line.get("message") == "upload rejected" and line["image_id"] == bad
        )
        assert len(processed["trace_id"]) == 32 and processed["trace_id"] == rejected["trace_id"]
        assert processed["service"] == "processor"
    finally:
        process.stop()


async def test_lost_events_and_unused_upload_urls_still_end_terminal(pipeline: Pipeline) -> None:
    lost = await pipeline.submit(images.jpeg(), "image/jpeg")
    await _take_the_event_of(pipeline, lost)  # the event existed, and now it is gone
    conn = await asyncpg.connect(pipeline.dsn)
    try:
        never = "01" + lost[2:25] + ("A" if lost[25] != "A" else "B")
        await conn.execute(
            "INSERT INTO image_records"
            " (id, status, content_type, file_name, object_key, project_id)"
            " VALUES ($1, 'pending', 'image/png', 'x.png', $2, 'default')",
            never,
            f"uploads/{never}",
        )
    finally:
        await conn.close()
    process = pipeline.processor(
        PROCESSOR_GC_INTERVAL_SECONDS="1",
        PROCESSOR_ABANDONED_AFTER_SECONDS="3",
        PROCESSOR_JOB_TIMEOUT_SECONDS="2",
        PROCESSOR_CLAIM_STALE_SECONDS="3",
    )
    try:
        records = await pipeline.wait_terminal([lost, never], within=30)
        assert records[lost]["status"] == "ready", "processed without its event"
        assert (records[never]["status"], records[never]["failure_reason"]) == (
            "failed",
            "NOT_UPLOADED",
        )
        await pipeline.assert_invariants()
    finally:
        process.stop()
