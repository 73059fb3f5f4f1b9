"""A new version's pods start before its migrations are applied (a rollout racing the
migration Job): they wait, not serving, until the Job is done; past SCHEMA_WAIT_SECONDS they
exit, saying what to run. Real upload processes against a real Postgres."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from imagery.common.db.migrate import load_migrations
from imagery.devstack.aws import AwsResources
from imagery.devstack.pipeline import service_env
from imagery.devstack.procs import free_port
from imagery.devstack.services import ServiceProcess, grpc_serving

pytestmark = pytest.mark.e2e


async def _forget_latest_migration(database_url: str) -> asyncpg.Record:
    """As if the latest bundled migration had not run yet; returns its row, to put back."""
    latest = max(m.version for m in load_migrations())
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow(
            "DELETE FROM schema_migrations WHERE version = $1 RETURNING *", latest
        )
    finally:
        await conn.close()
    assert row is not None
    return row


async def _apply(database_url: str, row: asyncpg.Record) -> None:
    """What the migration Job does for it (its SQL already ran: the test only hid it)."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            row["version"],
            row["name"],
            row["checksum"],
        )
    finally:
        await conn.close()


def _upload(database_url: str, aws: AwsResources, tmp_path: Path, **env: str) -> ServiceProcess:
    return ServiceProcess(
        "upload",
        "imagery.upload",
        free_port(),
        tmp_path / "upload.log",
        {**service_env(database_url, aws), **env},
        echo=None,
    )


async def test_a_pod_waits_for_the_migrations_it_needs_then_serves(
    database_url: str, aws: AwsResources, tmp_path: Path
) -> None:
    row = await _forget_latest_migration(database_url)
    service = _upload(database_url, aws, tmp_path, SCHEMA_WAIT_SECONDS="60")
    service.start()
    try:
        for _ in range(300):  # started (imports take seconds on a busy machine) and waiting
            log = service.log_path.read_text() if service.log_path.exists() else ""
            if "waiting for the database migrations" in log:
                break
            await asyncio.sleep(0.1)
        assert "waiting for the database migrations" in service.log_path.read_text()
        assert not grpc_serving(service.port), "serves nothing while a migration is pending"
        await _apply(database_url, row)
        service.wait_ready(timeout=15)  # its next look (every 5 s) finds the schema complete
    finally:
        service.stop()


async def test_past_its_wait_a_pod_exits_naming_what_to_run(
    database_url: str, aws: AwsResources, tmp_path: Path
) -> None:
    await _forget_latest_migration(database_url)
    service = _upload(database_url, aws, tmp_path, SCHEMA_WAIT_SECONDS="1")
    service.start()
    assert service.proc is not None
    code = await asyncio.to_thread(service.proc.wait, 30)
    service.stop()
    assert code != 0
    log = service.log_path.read_text()
    assert "imagery-admin migrate up" in log, log[-1500:]
