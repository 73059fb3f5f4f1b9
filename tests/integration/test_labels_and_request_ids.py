"""Labels and CreateUploadUrl's request ids on a real Postgres: the repository and the request
ids held to the same behaviour as the unit-test fakes, plus what only Postgres can show
(concurrent transactions, the audit trail, the change bus, a failed insert's claim)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import timedelta

import asyncpg
import pytest

from imagery.common.db.images import PostgresImageRepository
from imagery.common.db.upload_requests import PostgresUploadRequests
from imagery.common.domain import ImageRecord
from imagery.common.errors import ImageAlreadyExists, QuotaExceeded
from imagery.common.quotas import Quotas
from imagery.common.request_ids import UsedRequestId
from imagery.common.tenancy import DEFAULT_PROJECT
from imagery.upload.ports import UploadRequests
from tests.fakes import FakeUploadRequests, InMemoryImageRepository, pending_record

pytestmark = pytest.mark.integration
DAY = 86_400


@dataclass
class Store:
    images: InMemoryImageRepository | PostgresImageRepository
    requests: UploadRequests
    pool: asyncpg.Pool | None = None

    async def expire(self, request_id: str, seconds: float = DAY) -> None:
        """Age the request id's row by `seconds`."""
        if isinstance(self.requests, FakeUploadRequests):
            key = (DEFAULT_PROJECT, request_id)
            used, at = self.requests.kept[key]
            self.requests.kept[key] = (used, at - timedelta(seconds=seconds))
            return
        assert self.pool is not None
        await self.pool.execute(
            "UPDATE upload_requests SET created_at = created_at - make_interval(secs => $2)"
            " WHERE request_id = $1",
            request_id,
            seconds,
        )

    async def kept(self) -> set[tuple[str, str]]:
        if isinstance(self.requests, FakeUploadRequests):
            return set(self.requests.kept)
        assert self.pool is not None
        rows = await self.pool.fetch("SELECT project_id, request_id FROM upload_requests")
        return {(r["project_id"], r["request_id"]) for r in rows}

    async def prune(self) -> int:
        assert isinstance(self.requests, FakeUploadRequests | PostgresUploadRequests)
        return await self.requests.prune()


@pytest.fixture(params=["postgres", "fake"])
def store(request: pytest.FixtureRequest) -> Store:
    if request.param == "fake":
        images = InMemoryImageRepository()
        return Store(images, FakeUploadRequests(images))
    pool: asyncpg.Pool = request.getfixturevalue("pool")
    return Store(PostgresImageRepository(pool), PostgresUploadRequests(pool), pool)


def _labelled(**labels: str) -> ImageRecord:
    return replace(pending_record(100), labels=labels)


async def test_labels_are_saved_with_the_record_and_read_back(store: Store) -> None:
    record = _labelled(team="web", env="prod")
    await store.images.save(record, principal="key:test")
    found = await store.images.find_by_id(DEFAULT_PROJECT, record.id)
    assert found is not None and found.labels == {"team": "web", "env": "prod"}
    bare = pending_record()
    await store.images.save(bare, principal="key:test")
    assert (await store.images.find_by_id(DEFAULT_PROJECT, bare.id)).labels == {}  # type: ignore[union-attr]


async def test_update_labels_replaces_them_and_only_in_the_project(store: Store) -> None:
    record = _labelled(team="web", env="prod")
    await store.images.save(record, principal="key:test")
    before = await store.images.find_by_id(DEFAULT_PROJECT, record.id)
    await asyncio.sleep(0.01)
    assert await store.images.update_labels("other-team", record.id, {}, principal="k") is None
    updated = await store.images.update_labels(
        DEFAULT_PROJECT, record.id, {"env": "dev"}, principal="key:test"
    )
    assert updated is not None and before is not None
    assert updated.labels == {"env": "dev"}
    assert updated.updated_at is not None and before.updated_at is not None
    assert updated.updated_at > before.updated_at
    assert (updated.status, updated.file_name, updated.object_key) == (
        before.status,
        before.file_name,
        before.object_key,
    )
    assert await store.images.find_by_id(DEFAULT_PROJECT, record.id) == updated
    assert await store.images.update_labels(DEFAULT_PROJECT, "0" * 26, {}, principal="k") is None


async def test_a_request_id_saves_once_and_answers_its_image_after(store: Store) -> None:
    first, retry = _labelled(team="web"), _labelled(team="web")
    assert await store.requests.save_once(first, "req-1", "f1", principal="key:test") is None
    used = await store.requests.save_once(retry, "req-1", "f1", principal="key:test")
    assert used == UsedRequestId("f1", first.id, first.object_key)
    other = await store.requests.save_once(_labelled(), "req-1", "f2", principal="key:test")
    assert other == UsedRequestId("f1", first.id, first.object_key), (
        "the caller compares fingerprints"
    )
    assert await store.images.find_by_id(DEFAULT_PROJECT, retry.id) is None
    assert await store.images.find_by_id(DEFAULT_PROJECT, first.id) is not None
    assert await store.kept() == {(DEFAULT_PROJECT, "req-1")}


async def test_a_request_id_whose_image_was_deleted_answers_no_key(store: Store) -> None:
    first = pending_record()
    await store.requests.save_once(first, "req", "f", principal="key:test")
    assert await store.images.delete(DEFAULT_PROJECT, first.id, principal="key:test")
    used = await store.requests.save_once(pending_record(), "req", "f", principal="key:test")
    assert used == UsedRequestId("f", first.id, None)
    assert await store.kept() == {(DEFAULT_PROJECT, "req")}


async def test_an_id_past_the_retention_is_taken_afresh_and_pruned(store: Store) -> None:
    old, kept = pending_record(), pending_record()
    await store.requests.save_once(old, "old", "f1", principal="key:test")
    await store.requests.save_once(kept, "kept", "f1", principal="key:test")
    await store.expire("old", DAY - 60)
    assert await store.prune() == 0, "still within the day"
    await store.expire("old", 60)
    newer = pending_record()
    assert await store.requests.save_once(newer, "old", "f2", principal="key:test") is None
    again = await store.requests.save_once(pending_record(), "old", "f1", principal="key:test")
    assert again == UsedRequestId("f2", newer.id, newer.object_key), "the expired row was replaced"
    await store.expire("old", DAY)
    assert await store.prune() == 1
    assert await store.kept() == {(DEFAULT_PROJECT, "kept")}


async def test_a_refused_upload_keeps_no_request_id(store: Store) -> None:
    """The request id and the record commit together: a quota refusal leaves the id free."""
    await store.images.save(pending_record(), principal="key:test")
    with pytest.raises(QuotaExceeded):
        await store.requests.save_once(
            pending_record(), "req", "f", principal="key:test", quotas=Quotas(images=1)
        )
    assert await store.kept() == set()
    assert await store.requests.save_once(pending_record(), "req", "f", principal="k") is None


async def test_a_failed_insert_keeps_no_request_id(pool: asyncpg.Pool) -> None:
    """A claim written before the INSERT fails goes with the transaction."""
    record = pending_record()
    await PostgresImageRepository(pool).save(record, principal="key:test")
    with pytest.raises(ImageAlreadyExists):
        await PostgresUploadRequests(pool).save_once(record, "req", "f", principal="key:test")
    assert await pool.fetchval("SELECT count(*) FROM upload_requests") == 0


async def test_concurrent_calls_with_one_new_id_save_one_record(pool: asyncpg.Pool) -> None:
    """Twenty transactions race for one request id: one saves, the others wait for its
    commit and answer its image; the project counts one upload."""
    requests = PostgresUploadRequests(pool)
    records = [pending_record(100) for _ in range(20)]
    answers = await asyncio.gather(
        *(
            requests.save_once(r, "race", "f", principal="key:test", quotas=Quotas(images=100))
            for r in records
        )
    )
    saved = [r for r, a in zip(records, answers, strict=True) if a is None]
    assert len(saved) == 1
    assert {a for a in answers if a is not None} == {
        UsedRequestId("f", saved[0].id, saved[0].object_key)
    }
    assert await pool.fetchval("SELECT count(*) FROM image_records") == 1
    usage = await pool.fetchrow(
        "SELECT images, day_uploads FROM project_usage WHERE project_id = $1", DEFAULT_PROJECT
    )
    assert dict(usage or {}) == {"images": 1, "day_uploads": 1}


async def test_concurrent_ids_at_a_quota_admit_one(pool: asyncpg.Pool) -> None:
    """Different request ids against the last free slot: the quota still admits one."""
    requests = PostgresUploadRequests(pool)
    results = await asyncio.gather(
        *(
            requests.save_once(
                pending_record(), f"r{i}", "f", principal="key:test", quotas=Quotas(images=1)
            )
            for i in range(10)
        ),
        return_exceptions=True,
    )
    assert sum(r is None for r in results) == 1
    assert all(isinstance(r, QuotaExceeded) for r in results if r is not None)
    assert await pool.fetchval("SELECT count(*) FROM upload_requests") == 1


@pytest.fixture
async def changes(database_url: str) -> AsyncIterator[asyncio.Queue[str]]:
    conn = await asyncpg.connect(database_url)
    heard: asyncio.Queue[str] = asyncio.Queue()
    await conn.add_listener("imagery_changes", lambda *args: heard.put_nowait(args[-1]))
    yield heard
    await conn.close()


async def test_update_labels_is_audited_and_announced(
    pool: asyncpg.Pool, changes: asyncio.Queue[str]
) -> None:
    images = PostgresImageRepository(pool)
    record = _labelled(team="web")
    await images.save(record, principal="key:test")
    await images.update_labels(DEFAULT_PROJECT, record.id, {"team": "app"}, principal="key:abc")
    assert await asyncio.wait_for(changes.get(), 5) == f"state:{record.id}"
    audit = await pool.fetchrow(
        "SELECT project_id, principal, target, outcome, details FROM audit_events"
        " WHERE action = 'image.update'"
    )
    assert audit is not None
    assert (audit["project_id"], audit["principal"], audit["target"], audit["outcome"]) == (
        DEFAULT_PROJECT,
        "key:abc",
        f"images/{record.id}",
        "ok",
    )
    assert json.loads(audit["details"]) == {"update_mask": ["labels"]}
    assert await images.update_labels("other-team", record.id, {}, principal="key:x") is None
    assert (
        await pool.fetchval("SELECT count(*) FROM audit_events WHERE action = 'image.update'") == 1
    ), "a refused update audits nothing"
