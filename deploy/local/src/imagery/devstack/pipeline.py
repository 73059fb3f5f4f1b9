"""Drive the processing pipeline as a client would, for end-to-end tests and benchmarks:
start processors, submit uploads (pending record + bytes PUT to the bucket, whose event
notification does the rest), wait for outcomes, check the invariants."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import boto3

from imagery.common.ids import new_image_id
from imagery.common.storage_keys import GLOBAL_SCOPE, image_id_from_upload_key, upload_key
from imagery.devstack.aws import LOCAL_CREDENTIALS, AwsResources
from imagery.devstack.procs import free_port
from imagery.devstack.services import ServiceProcess


def service_env(database_url: str, aws: AwsResources) -> dict[str, str]:
    """The settings every imagery process needs to reach this Postgres and this S3/SQS."""
    return {
        **LOCAL_CREDENTIALS,
        "DATABASE_URL": database_url,
        "AWS_ENDPOINT_URL": aws.endpoint_url,
        "AWS_REGION": aws.region,
        "S3_BUCKET": aws.bucket,
        "SQS_QUEUE_URL": aws.queue_url,
        "SQS_DLQ_URL": aws.dlq_url,
        "LOG_FORMAT": "json",
        **({"EVENTS_TOPIC_ARN": aws.events_topic_arn} if aws.events_topic_arn else {}),
    }


@dataclass
class Pipeline:
    dsn: str
    aws: AwsResources
    workdir: Path

    def __post_init__(self) -> None:
        self.s3 = boto3.client(
            "s3", endpoint_url=self.aws.endpoint_url, region_name=self.aws.region
        )
        self.sqs = boto3.client(
            "sqs", endpoint_url=self.aws.endpoint_url, region_name=self.aws.region
        )
        self._starts = 0

    def processor(self, **settings: str) -> ServiceProcess:
        self._starts += 1
        env = {
            **service_env(self.dsn, self.aws),
            "PROCESSOR_JOB_SLOTS": "2",
            "PROCESSOR_CONCURRENCY": "2",
            "PROCESSOR_RETRY_BASE_SECONDS": "1",
            "LOG_LEVEL": "info",
            **settings,
        }
        process = ServiceProcess(
            "processor",
            "imagery.processor",
            free_port(),
            self.workdir / f"processor-{self._starts}.log",
            env,
            echo=None,
        )
        return process.start_ready(timeout=60)

    async def submit(self, body: bytes, content_type: str = "image/jpeg") -> str:
        """What a client does after CreateUploadUrl: the pending record exists, the bytes arrive."""
        image_id = await self.create_pending(content_type)
        await self.put_upload(image_id, body, content_type)
        return image_id

    async def create_pending(self, content_type: str = "image/jpeg") -> str:
        """The record CreateUploadUrl makes, before any bytes."""
        image_id = new_image_id()
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute(
                "INSERT INTO image_records"
                " (id, status, content_type, file_name, object_key, project_id)"
                " VALUES ($1, 'pending', $2, 'upload', $3, 'default')",
                image_id,
                content_type,
                upload_key(GLOBAL_SCOPE, image_id),
            )
        finally:
            await conn.close()
        return image_id

    async def put_upload(self, image_id: str, body: bytes, content_type: str) -> None:
        """The client's presigned PUT: the bytes land in uploads/ and S3 raises the event."""
        await asyncio.to_thread(
            self.s3.put_object,
            Bucket=self.aws.bucket,
            Key=upload_key(GLOBAL_SCOPE, image_id),
            Body=body,
            ContentType=content_type,
        )

    async def records(self, ids: list[str]) -> dict[str, asyncpg.Record]:
        conn = await asyncpg.connect(self.dsn)
        try:
            rows = await conn.fetch("SELECT * FROM image_records WHERE id = ANY($1::text[])", ids)
        finally:
            await conn.close()
        return {r["id"]: r for r in rows}

    async def wait_terminal(self, ids: list[str], within: float = 60) -> dict[str, asyncpg.Record]:
        deadline = time.monotonic() + within
        while True:
            found = await self.records(ids)
            if all(r["status"] in ("ready", "failed") for r in found.values()) and len(
                found
            ) == len(ids):
                return found
            if time.monotonic() > deadline:
                stuck = {
                    i: r["status"]
                    for i, r in found.items()
                    if r["status"] not in ("ready", "failed")
                }
                raise AssertionError(f"not terminal after {within} s: {stuck}")
            await asyncio.sleep(0.2)

    def upload_keys(self) -> list[str]:
        resp = self.s3.list_objects_v2(Bucket=self.aws.bucket, Prefix="uploads/")
        return [o["Key"] for o in resp.get("Contents", [])]

    def queue_counts(self, url: str | None = None) -> tuple[int, int]:
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=url or self.aws.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]), int(
            attrs["ApproximateNumberOfMessagesNotVisible"]
        )

    async def wait_queue_empty(self, within: float = 30) -> None:
        deadline = time.monotonic() + within
        while self.queue_counts() != (0, 0):
            if time.monotonic() > deadline:
                raise AssertionError(f"queue not empty after {within} s: {self.queue_counts()}")
            await asyncio.sleep(0.2)

    async def assert_invariants(self) -> None:
        """Every upload in exactly one terminal state, nothing processing, no orphaned upload
        object, and each blob's reference_count equal to the records pointing at it."""
        conn = await asyncpg.connect(self.dsn)
        try:
            assert (
                await conn.fetchval(
                    "SELECT count(*) FROM image_records WHERE status = 'processing'"
                )
                == 0
            )
            mismatched = await conn.fetch(
                """SELECT b.sha256, b.reference_count, count(r.id) AS refs
                     FROM image_blobs b LEFT JOIN image_records r ON r.sha256 = b.sha256
                    GROUP BY b.sha256, b.reference_count HAVING b.reference_count <> count(r.id)"""
            )
            assert mismatched == [], mismatched
            pending = {
                r["id"]
                for r in await conn.fetch("SELECT id FROM image_records WHERE status = 'pending'")
            }
        finally:
            await conn.close()
        orphans = [
            k
            for k in self.upload_keys()
            if image_id_from_upload_key(GLOBAL_SCOPE, k) not in pending
        ]
        assert orphans == [], f"upload objects left behind: {orphans}"
