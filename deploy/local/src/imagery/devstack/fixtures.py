"""Real infrastructure for integration tests, e2e tests and benchmarks: Postgres (DATABASE_URL
when set, else an embedded server), one local S3/SQS server and Redis (REDIS_URL when set,
else `redis-server`); each test gets its own database and its own bucket and queues, so
tests are isolated and can run in any order."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import boto3

from imagery.common.db.migrate import migrate
from imagery.common.formats import content_type_of
from imagery.common.ids import new_image_id
from imagery.common.presets import PRESET_NAMES
from imagery.common.storage_keys import (
    GLOBAL_SCOPE,
    VARIANT_CACHE_CONTROL,
    upload_key,
    variant_key,
)
from imagery.common.tenancy import DEFAULT_PROJECT
from imagery.devstack.aws import (
    LOCAL_CREDENTIALS,
    MAX_RECEIVE_COUNT,
    AwsResources,
    provision,
    start_moto,
)
from imagery.devstack.postgres import EmbeddedPostgres
from imagery.devstack.procs import free_port, port_open, wait_for

TEMPLATE_DB = "imagery_test_template"


def with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


@dataclass
class RedisServer:
    url: str
    process: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(cls) -> RedisServer:
        """`REDIS_URL` if set, else `redis-server` on a free port, nothing kept on disk."""
        if url := os.environ.get("REDIS_URL"):
            return cls(url)
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: install it, or set REDIS_URL")
        port = free_port()
        process = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for(lambda: process.poll() is None and port_open(port), "redis-server", 10)
        except TimeoutError:
            process.kill()
            process.wait()
            raise
        return cls(f"redis://127.0.0.1:{port}/0", process)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class PostgresServer:
    admin_dsn: str
    embedded: EmbeddedPostgres | None = None

    @classmethod
    def start(cls) -> PostgresServer:
        if url := os.environ.get("DATABASE_URL"):
            return cls(url)
        data_dir = Path(tempfile.mkdtemp(prefix="imagery-test-pg-")) / "data"
        pg = EmbeddedPostgres(data_dir, free_port(), durable=False)
        return cls(pg.start(), pg)

    async def prepare_template(self) -> None:
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE_DB} WITH (FORCE)")
            await conn.execute(f"CREATE DATABASE {TEMPLATE_DB}")
        finally:
            await conn.close()
        await migrate(with_database(self.admin_dsn, TEMPLATE_DB))

    async def new_database(self, *, migrated: bool = True) -> str:
        name = f"imagery_test_{uuid.uuid4().hex[:12]}"
        template = f" TEMPLATE {TEMPLATE_DB}" if migrated else ""
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(f"CREATE DATABASE {name}{template}")
        finally:
            await conn.close()
        return with_database(self.admin_dsn, name)

    async def drop_database(self, dsn: str) -> None:
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(
                f"DROP DATABASE IF EXISTS {urlsplit(dsn).path.lstrip('/')} WITH (FORCE)"
            )
        finally:
            await conn.close()

    def stop(self) -> None:
        """Stop an embedded server and remove its throwaway data directory."""
        if self.embedded is not None:
            self.embedded.stop()
            shutil.rmtree(self.embedded.data_dir.parent, ignore_errors=True)


@dataclass
class AwsServer:
    endpoint_url: str
    proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(cls) -> AwsServer:
        for key, value in LOCAL_CREDENTIALS.items():
            os.environ.setdefault(key, value)
        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        if url := os.environ.get("AWS_ENDPOINT_URL"):
            return cls(url)
        port = free_port()
        return cls(f"http://127.0.0.1:{port}", start_moto(port))

    def new_resources(
        self, *, max_receive_count: int = MAX_RECEIVE_COUNT, visibility_timeout: int = 60
    ) -> AwsResources:
        suffix = uuid.uuid4().hex[:10]
        return provision(
            self.endpoint_url,
            bucket=f"imagery-test-{suffix}",
            queue=f"imagery-test-{suffix}",
            max_receive_count=max_receive_count,
            visibility_timeout=visibility_timeout,
        )

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)


async def seed_ready_images(
    dsn: str,
    aws: AwsResources,
    count: int,
    *,
    presets: Sequence[str] = PRESET_NAMES,
    formats: Sequence[str] = ("webp", "jpeg"),
    put_objects: bool = True,
    project_id: str = DEFAULT_PROJECT,
) -> list[str]:
    """Insert `count` READY images of `project_id` (each with its own blob and variants) the
    way the processor leaves them, and store their variant objects; returns the image ids.
    For tests and benchmarks of delivery that must not depend on the processor. Rows are
    bulk-copied in one
    transaction and the tables analysed, so thousands are quick and planned as in production
    (the delivery benchmark seeds 20,000)."""
    blobs: list[tuple[object, ...]] = []
    variants: list[tuple[object, ...]] = []
    records: list[tuple[object, ...]] = []
    objects: list[tuple[str, bytes, str]] = []
    for _ in range(count):
        image_id, sha = new_image_id(), hashlib.sha256(uuid.uuid4().bytes).hexdigest()
        for name in presets:
            for fmt in formats:
                key = variant_key(GLOBAL_SCOPE, sha, name, fmt)
                body = f"{fmt} bytes of {name} {sha}".encode()
                variants.append((sha, name, fmt, content_type_of(fmt), 100, 80, len(body), key))
                objects.append((key, body, content_type_of(fmt)))
        blobs.append((sha, "jpeg", 100, 80, 1234, 1))
        upload = upload_key(GLOBAL_SCOPE, image_id)
        records.append(
            (
                image_id,
                "ready",
                "image/jpeg",
                "seeded.jpg",
                upload,
                1234,
                100,
                80,
                sha,
                "jpeg",
                project_id,
            )
        )
    if put_objects:
        s3 = boto3.client("s3", endpoint_url=aws.endpoint_url, region_name=aws.region)
        for key, body, content_type in objects:
            s3.put_object(
                Bucket=aws.bucket,
                Key=key,
                Body=body,
                ContentType=content_type,
                CacheControl=VARIANT_CACHE_CONTROL,
            )
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.copy_records_to_table("image_blobs", records=blobs, columns=_BLOB_COLUMNS)
            await conn.copy_records_to_table(
                "image_variants", records=variants, columns=_VARIANT_COLUMNS
            )
            await conn.copy_records_to_table(
                "image_records", records=records, columns=_RECORD_COLUMNS
            )
        await conn.execute("ANALYZE image_blobs, image_variants, image_records")
    finally:
        await conn.close()
    return [str(record[0]) for record in records]


_BLOB_COLUMNS = ["sha256", "format", "width", "height", "size_bytes", "reference_count"]
_VARIANT_COLUMNS = [
    "sha256",
    "name",
    "format",
    "content_type",
    "width",
    "height",
    "size_bytes",
    "object_key",
]
_RECORD_COLUMNS = [
    "id",
    "status",
    "content_type",
    "file_name",
    "object_key",
    "size_bytes",
    "width",
    "height",
    "sha256",
    "detected_format",
    "project_id",
]


async def allow_connections(dsn: str, admin_dsn: str, allowed: bool) -> None:
    """A database outage as services see it: new connections refused and the open ones cut
    (or connections allowed again)."""
    name = dsn.rsplit("/", 1)[1]
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS {str(allowed).lower()}")
        if not allowed:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
            )
    finally:
        await conn.close()


async def seed_record(
    dsn: str,
    status: str,
    *,
    failure_reason: str | None = None,
    project_id: str = DEFAULT_PROJECT,
) -> str:
    """One record in the given non-ready status."""
    image_id = new_image_id()
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO image_records"
            " (id, status, content_type, file_name, object_key, failure_reason, project_id)"
            " VALUES ($1, $2, 'image/png', 'x.png', $3, $4, $5)",
            image_id,
            status,
            upload_key(GLOBAL_SCOPE, image_id),
            failure_reason,
            project_id,
        )
    finally:
        await conn.close()
    return image_id
