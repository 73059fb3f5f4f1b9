"""Quotas on a real Postgres and a real gRPC socket: usage follows every writer of an image
record (migration 0012's triggers), and concurrent CreateUploadUrl calls at quota - 1 admit
exactly one."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from imagery.common.config import Settings
from imagery.common.db.images import PostgresImageRepository
from imagery.common.db.usage import read_usage
from imagery.common.ids import new_image_id
from imagery.common.quotas import Quotas
from imagery.common.tenancy import DEFAULT_PROJECT, Usage
from imagery.upload.bootstrap import build_server
from imagery.upload.config import UploadSettings
from imagery.v1 import upload_service_pb2 as pb
from imagery.v1 import upload_service_pb2_grpc as pb_grpc
from tests import grpc_auth
from tests.fakes import pending_record
from tests.principals import policy

pytestmark = pytest.mark.integration
SIZE = 1000


async def _serve(settings: Settings, **environ: int) -> AsyncIterator[str]:
    limited = dataclasses.replace(settings, projects=policy(**environ))
    async with AsyncExitStack() as stack:
        server = await build_server(UploadSettings(limited, 3600), stack)
        port = await server.start(0, host="127.0.0.1")
        yield f"127.0.0.1:{port}"
        await server.stop()


def _request() -> pb.CreateUploadUrlRequest:
    return pb.CreateUploadUrlRequest(
        content_type="image/png", file_name="a.png", size_bytes=SIZE, sha256="ab" * 32
    )


@pytest.mark.parametrize(
    ("quota", "environ"),
    [
        ("quota_images", {"project_quota_images_default": 5}),
        ("quota_bytes", {"project_quota_bytes_default": 5 * SIZE}),
        ("quota_uploads_per_day", {"project_quota_uploads_per_day_default": 5}),
    ],
)
async def test_a_hundred_concurrent_calls_at_quota_minus_one_admit_exactly_one(
    settings: Settings, api_key: str, pool: asyncpg.Pool, quota: str, environ: dict[str, int]
) -> None:
    async for target in _serve(settings, **environ):
        async with grpc_auth.channel(target, api_key) as channel:
            stub = pb_grpc.UploadServiceStub(channel)
            for _ in range(4):
                await stub.CreateUploadUrl(_request())
            # Hold the project's usage row so that the calls pile up on it and race for real
            # when it is let go (unheld, the server's own pace would mostly space them out).
            async with pool.acquire() as holder, holder.transaction():
                await holder.execute(
                    "SELECT 1 FROM project_usage WHERE project_id = 'default' FOR UPDATE"
                )
                calls = asyncio.gather(
                    *(stub.CreateUploadUrl(_request()) for _ in range(100)),
                    return_exceptions=True,
                )
                await _until_waiting_on_locks(pool, 5)
            answers = await calls
    refused = [a for a in answers if isinstance(a, grpc.aio.AioRpcError)]
    admitted = [a for a in answers if isinstance(a, pb.CreateUploadUrlResponse)]
    assert len(admitted) == 1 and len(refused) == 99
    assert {e.code() for e in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    info, failure = _details(refused[0])
    assert (info.reason, info.metadata["quota"], info.metadata["limit"]) == (
        "QUOTA_EXCEEDED",
        quota,
        str(environ[f"project_{quota}_default"]),
    )
    assert failure.violations[0].subject == "projects/default"
    assert quota in failure.violations[0].description
    stored = await pool.fetchval("SELECT count(*) FROM image_records WHERE project_id = 'default'")
    assert stored == 5, "a refused call stores nothing"


async def _until_waiting_on_locks(pool: asyncpg.Pool, count: int) -> None:
    for _ in range(200):
        waiting = await pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        if waiting >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {count} calls reached the database in 10 s")


def _details(
    error: grpc.aio.AioRpcError,
) -> tuple[error_details_pb2.ErrorInfo, error_details_pb2.QuotaFailure]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    info, failure = error_details_pb2.ErrorInfo(), error_details_pb2.QuotaFailure()
    for detail in status.details:
        if not detail.Unpack(info):
            detail.Unpack(failure)
    return info, failure


async def _usage(pool: asyncpg.Pool) -> Usage:
    return (await read_usage(pool, [DEFAULT_PROJECT]))[DEFAULT_PROJECT]


async def _pending(repo: PostgresImageRepository, reserved: int) -> str:
    record = pending_record(reserved)
    await repo.save(record, principal="key:test")
    return record.id


async def test_usage_follows_each_image_from_reservation_to_its_end(
    pool: asyncpg.Pool,
) -> None:
    repo = PostgresImageRepository(pool)
    first = await _pending(repo, SIZE)
    assert await _usage(pool) == Usage(images=1, bytes=SIZE, uploads_today=1)
    second, third = await _pending(repo, SIZE), await _pending(repo, SIZE)
    assert await _usage(pool) == Usage(images=3, bytes=3 * SIZE, uploads_today=3)

    await pool.execute(  # the processor's commit: the verified size replaces the reservation
        "UPDATE image_records SET status = 'processing' WHERE id = $1", first
    )
    assert (await _usage(pool)).bytes == 3 * SIZE, "processing still holds its reservation"
    await pool.execute(
        "UPDATE image_records SET status = 'ready', size_bytes = 123 WHERE id = $1", first
    )
    await pool.execute(
        "UPDATE image_records SET status = 'failed', failure_reason = 'CORRUPT' WHERE id = $1",
        second,
    )
    assert await _usage(pool) == Usage(images=2, bytes=123 + SIZE, uploads_today=3)
    assert await repo.delete(DEFAULT_PROJECT, third, principal="key:test") is not None
    assert await repo.delete(DEFAULT_PROJECT, second, principal="key:test") is not None
    assert await _usage(pool) == Usage(images=1, bytes=123, uploads_today=3), (
        "deleting a FAILED image gives nothing back twice; uploads today stay counted"
    )


async def test_a_batch_statement_is_counted_per_project(pool: asyncpg.Pool) -> None:
    repo = PostgresImageRepository(pool)
    for _ in range(5):
        await _pending(repo, 10)
    await pool.execute("UPDATE image_records SET status = 'ready', size_bytes = 7")
    assert await _usage(pool) == Usage(images=5, bytes=35, uploads_today=5)
    await pool.execute("DELETE FROM image_records")
    assert await _usage(pool) == Usage(images=0, bytes=0, uploads_today=5)


async def test_quotas_beyond_32_bits_are_compared_as_such(pool: asyncpg.Pool) -> None:
    repo = PostgresImageRepository(pool)
    big = Quotas(images=5_000_000_000, bytes=10**15, uploads_per_day=5_000_000_000)
    record = pending_record(3 * 2**30)
    await repo.save(record, principal="key:test", quotas=big)
    assert await _usage(pool) == Usage(images=1, bytes=3 * 2**30, uploads_today=1)


async def test_deleting_while_the_same_content_is_marked_ready_cannot_deadlock(
    pool: asyncpg.Pool,
) -> None:
    """DeleteImage takes the record, the content's row, then (trigger) the usage row; the
    processor marking another image of that content READY holds the content's row, then
    takes the usage row. Both in that order: one waits for the other, neither deadlocks."""
    sha = "cd" * 32
    deleted, finishing = new_image_id(), new_image_id()
    await pool.execute(
        "INSERT INTO image_blobs (sha256, format, width, height, size_bytes, reference_count,"
        " stored_at) VALUES ($1, 'png', 1, 1, 9, 1, now())",
        sha,
    )
    await pool.executemany(
        "INSERT INTO image_records (id, status, content_type, file_name, object_key, sha256,"
        " size_bytes) VALUES ($1, $2, 'image/png', 'a.png', 'uploads/' || $1, $3, $4)",
        [(deleted, "ready", sha, 9), (finishing, "processing", None, None)],
    )
    repo = PostgresImageRepository(pool)
    async with pool.acquire() as processor, processor.transaction():
        await processor.execute(  # the processor's reference to the content
            "UPDATE image_blobs SET reference_count = reference_count + 1 WHERE sha256 = $1", sha
        )
        deleting = asyncio.create_task(repo.delete(DEFAULT_PROJECT, deleted, principal="key:t"))
        await _until_waiting_on_locks(pool, 1)
        await processor.execute(  # ... then its commit of READY: the usage row
            "UPDATE image_records SET status = 'ready', size_bytes = 9, sha256 = $2 WHERE id = $1",
            finishing,
            sha,
        )
    assert await deleting is not None
    assert await _usage(pool) == Usage(images=1, bytes=9, uploads_today=2)
