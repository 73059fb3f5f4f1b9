"""Real infrastructure for integration tests, e2e tests and benchmarks: Postgres (DATABASE_URL
when set, else an embedded server) and one local S3/SQS server; each test gets its own
database and its own bucket and queues, so tests are isolated and can run in any order."""

from __future__ import annotations

import os
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from imagery.common.db.migrate import migrate
from imagery.devstack.aws import LOCAL_CREDENTIALS, AwsResources, provision, start_moto
from imagery.devstack.postgres import EmbeddedPostgres
from imagery.devstack.procs import free_port

TEMPLATE_DB = "imagery_test_template"


def with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


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
        if self.embedded is not None:
            self.embedded.stop()


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
        self, *, max_receive_count: int = 5, visibility_timeout: int = 60
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
