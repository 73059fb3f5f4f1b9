"""Whether the processor's dependencies answer: one cheap call to Postgres and one to S3."""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg

from imagery.common.aws.clients import aws_unavailable
from imagery.common.db.pool import postgres_errors

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client


class PostgresAndS3Probe:
    def __init__(self, pool: asyncpg.Pool, s3: S3Client, bucket: str) -> None:
        self._pool = pool
        self._s3 = s3
        self._bucket = bucket

    async def check(self) -> None:
        with postgres_errors():
            await self._pool.fetchval("SELECT 1")
        with aws_unavailable("S3 HeadBucket"):
            await self._s3.head_bucket(Bucket=self._bucket)
