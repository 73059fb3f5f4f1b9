"""The change bus over real Postgres: a committed change reaches every replica's caches, an
uncommitted one never does, a revoked key is refused everywhere within the documented bound
(one second), and a replica that loses its connection drops its caches and reads Postgres
until it listens again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence

import asyncpg
import pytest

from imagery.common.api_keys import key_id_of
from imagery.common.db.changes import STALENESS_BOUND_SECONDS, ChangeBus
from imagery.common.db.projects import PostgresProjects, notify
from imagery.common.errors import KeyRevoked
from imagery.common.grpc.auth import Authenticator
from imagery.common.tenancy import DEFAULT_PROJECT, IMAGE_SCOPES, Actor, Grant

pytestmark = pytest.mark.integration


class Heard:
    def __init__(self) -> None:
        self.changes: list[str] = []
        self.resets = 0

    def changed(self, change: str) -> None:
        self.changes.append(change)

    def reset(self) -> None:
        self.resets += 1


class CountingGrants:
    def __init__(self, projects: PostgresProjects) -> None:
        self.projects = projects
        self.loads = 0

    async def grant_for_key(self, key_id: str) -> Grant | None:
        self.loads += 1
        return await self.projects.grant_for_key(key_id)

    async def grant_for_identity(self, identity: str) -> Grant | None:
        self.loads += 1
        return await self.projects.grant_for_identity(identity)

    async def touch_keys(self, key_ids: Sequence[str]) -> None:
        await self.projects.touch_keys(key_ids)


def _listening(bus: ChangeBus) -> Callable[[], bool]:
    return lambda: bus.connected


async def _until(condition, seconds: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


@pytest.fixture
async def bus(database_url: str) -> AsyncIterator[ChangeBus]:
    bus = ChangeBus(database_url, retry_seconds=0.05)
    await bus.start()
    assert bus.connected
    yield bus
    await bus.close()


async def test_only_committed_changes_are_heard(bus: ChangeBus, pool: asyncpg.Pool) -> None:
    heard = Heard()
    bus.subscribe(heard)
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        await notify(conn, "image:rolled-back")
        await transaction.rollback()
        async with conn.transaction():
            await notify(conn, "image:committed")
    await _until(lambda: heard.changes)
    assert heard.changes == ["image:committed"]


async def test_a_revoked_key_is_refused_by_every_replica_within_the_bound(
    database_url: str, pool: asyncpg.Pool
) -> None:
    projects = PostgresProjects(pool)
    made = await projects.bootstrap_key(
        DEFAULT_PROJECT, Actor("cli:test"), key_name="ci", scopes=IMAGE_SCOPES
    )
    replicas = []
    for _ in range(3):
        bus = ChangeBus(database_url)
        grants = CountingGrants(projects)
        auth = Authenticator(grants, caching=_listening(bus))
        bus.subscribe(auth)
        await bus.start()
        replicas.append((bus, grants, auth))
    try:
        for _, grants, auth in replicas:
            await auth.authenticate({"authorization": f"Bearer {made.secret}"}, None)
            await auth.authenticate({"authorization": f"Bearer {made.secret}"}, None)
            assert grants.loads == 1, "the second check is answered from the cache"
        key_id = key_id_of(made.secret)
        assert key_id is not None
        await projects.revoke_key(DEFAULT_PROJECT, key_id, Actor("cli:test"))
        committed = time.monotonic()
        pending = {id(a): a for _, _, a in replicas}
        while pending:
            assert time.monotonic() - committed < STALENESS_BOUND_SECONDS
            for name, auth in list(pending.items()):
                try:
                    await auth.authenticate({"authorization": f"Bearer {made.secret}"}, None)
                except KeyRevoked:
                    del pending[name]
            await asyncio.sleep(0.002)
    finally:
        for bus, _, auth in replicas:
            await bus.close()
            await auth.close()


async def test_a_replica_that_loses_its_connection_reads_postgres_until_it_listens_again(
    bus: ChangeBus, pool: asyncpg.Pool
) -> None:
    heard = Heard()
    bus.subscribe(heard)
    await pool.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE application_name = 'imagery-changes'"
    )
    await _until(lambda: heard.resets >= 1)
    await _until(lambda: bus.connected)
    assert heard.resets >= 2, "reset on loss, and again on listening: nothing cached survives"
    async with pool.acquire() as conn:
        await notify(conn, "key:after")
    await _until(lambda: "key:after" in heard.changes)


async def test_a_stalled_connection_is_noticed_within_the_bound(
    bus: ChangeBus, pool: asyncpg.Pool
) -> None:
    """The backend stops answering (a frozen network path looks the same): no error arrives,
    yet within the bound the bus stops vouching for the caches."""
    import os
    import signal

    heard = Heard()
    bus.subscribe(heard)
    pid = await pool.fetchval(
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'imagery-changes'"
    )
    os.kill(pid, signal.SIGSTOP)
    stalled = time.monotonic()
    try:
        await _until(lambda: not bus.connected, seconds=STALENESS_BOUND_SECONDS)
        assert heard.resets >= 1
        assert time.monotonic() - stalled < STALENESS_BOUND_SECONDS
    finally:
        os.kill(pid, signal.SIGCONT)
    await _until(lambda: bus.connected)
