"""`imagery-admin block` and `unblock` against real Postgres, without a processor: what the
command itself does in its transaction, what it refuses, and that a dry run changes nothing.
The takedown job (bucket, CloudFront) is in tests/e2e/test_takedown_journey.py."""

from __future__ import annotations

import asyncio

import asyncpg

from imagery.devstack.aws import AwsResources
from imagery.devstack.fixtures import seed_ready_images
from tests.integration.test_admin_cli import admin


async def _ready_image(database_url: str, aws: AwsResources) -> tuple[str, str]:
    (image_id,) = await seed_ready_images(database_url, aws, 1, put_objects=False)
    conn = await asyncpg.connect(database_url)
    try:  # the `default` project's content address is the bytes' SHA-256
        sha = await conn.fetchval(
            "UPDATE image_records SET digest = sha256 WHERE id = $1 RETURNING digest", image_id
        )
    finally:
        await conn.close()
    return image_id, sha


async def test_block_refuses_what_it_cannot_resolve(database_url: str, pool: asyncpg.Pool) -> None:
    unknown = await admin(
        "block", "01M8YEYP6S5RZ6733TMTFF6CVF", "--reason", "r", database_url=database_url
    )
    assert unknown.code == 1 and "No image 01M8YEYP6S5RZ6733TMTFF6CVF" in unknown.err
    garbage = await admin("block", "cat.jpg", "--reason", "r", database_url=database_url)
    assert garbage.code == 1 and "neither a SHA-256" in garbage.err
    empty = await admin("block", "ab" * 32, "--reason", " ", database_url=database_url)
    assert empty.code == 1 and "--reason is empty" in empty.err
    not_blocked = await admin("unblock", "ab" * 32, "--reason", "r", database_url=database_url)
    assert not_blocked.code == 1 and "is not blocked" in not_blocked.err
    assert await pool.fetchval("SELECT count(*) FROM blocked_content") == 0


async def test_block_turns_the_image_blocked_in_one_transaction_and_unblock_undoes_the_block(
    database_url: str, aws: AwsResources, pool: asyncpg.Pool
) -> None:
    image_id, sha = await _ready_image(database_url, aws)
    dry = await admin(
        "block", image_id, "--reason", "T-9", "--dry-run", "--json", database_url=database_url
    )
    assert dry.code == 0, dry.err
    assert dry.json()["projects"] == {"default": 1}
    assert (
        await pool.fetchval("SELECT status FROM image_records WHERE id = $1", image_id) == "ready"
    )
    assert await pool.fetchval("SELECT count(*) FROM blocked_content") == 0

    await pool.execute(  # a lazy preset asked for: it would write a variant again
        "INSERT INTO render_requests (sha256, profile_version, preset, project_id, source)"
        " VALUES ($1, 0, 'large', 'default', 'lazy')",
        sha,
    )
    done = await admin(
        "block", image_id, "--reason", "T-9", "--no-wait", "--json", database_url=database_url
    )
    assert done.code == 0, done.err
    assert done.json()["images_blocked"] == 1 and done.json()["state"] == "queued"
    record = await pool.fetchrow(
        "SELECT status, failure_reason, sha256, digest FROM image_records WHERE id = $1", image_id
    )
    assert record is not None and dict(record) == {
        "status": "blocked",
        "failure_reason": "BLOCKED",
        "sha256": None,
        "digest": sha,
    }
    assert (
        await pool.fetchval("SELECT reference_count FROM image_blobs WHERE sha256 = $1", sha) == 0
    )
    assert await pool.fetchval("SELECT reason FROM blocked_content WHERE sha256 = $1", sha) == "T-9"
    assert await pool.fetchval("SELECT count(*) FROM render_requests") == 0
    job = await pool.fetchrow("SELECT kind, target, state FROM admin_jobs")
    assert job is not None and dict(job) == {"kind": "takedown", "target": sha, "state": "queued"}
    event = await pool.fetchrow(
        "SELECT type, sequence FROM event_outbox WHERE image_id = $1", image_id
    )
    assert event is not None and dict(event) == {"type": "image.blocked", "sequence": 1}
    usage = await pool.fetchval("SELECT bytes FROM project_usage WHERE project_id = 'default'")
    assert usage == 0, "a BLOCKED image keeps no content, so it counts no bytes"

    listed = await admin("blocked", "--json", database_url=database_url)
    assert [(b["sha256"], b["reason"]) for b in listed.json()] == [(sha, "T-9")]
    early = await admin("unblock", sha, "--reason", "appeal", database_url=database_url)
    assert early.code == 1 and "is still queued" in early.err, "the takedown has not run yet"
    await pool.execute("UPDATE admin_jobs SET state = 'done', finished_at = now()")
    undone = await admin("unblock", sha, "--reason", "appeal", database_url=database_url)
    assert undone.code == 0, undone.err
    assert "stay BLOCKED" in undone.out
    assert await pool.fetchval("SELECT count(*) FROM blocked_content") == 0
    assert (
        await pool.fetchval("SELECT status FROM image_records WHERE id = $1", image_id) == "blocked"
    )
    actions = await pool.fetch(
        "SELECT action, details->>'reason' AS reason FROM audit_events"
        " WHERE action LIKE 'content.%' ORDER BY id"
    )
    assert [tuple(a) for a in actions] == [("content.block", "T-9"), ("content.unblock", "appeal")]


async def test_an_image_turning_ready_waits_for_a_block_in_progress_and_sees_it(
    pool: asyncpg.Pool,
) -> None:
    """The processor's check before READY takes the lock `block` holds while it blocks: an
    upload racing the block is never READY on blocked bytes."""
    from imagery.processor.adapters.postgres import PostgresOutcomes

    sha = "cd" * 32
    async with pool.acquire() as blocker, blocker.transaction():
        await blocker.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('imagery:content:' || $1, 0))", sha
        )
        await blocker.execute(
            "INSERT INTO blocked_content (sha256, reason, blocked_by) VALUES ($1, 'r', 'op')", sha
        )

        async def check() -> bool:
            async with PostgresOutcomes(pool).unit_of_work() as uow:
                return await uow.content_blocked(sha)

        racing = asyncio.create_task(check())
        await asyncio.sleep(0.5)
        assert not racing.done(), "the check waits for the block's transaction"
    assert await asyncio.wait_for(racing, 5) is True
    assert await PostgresOutcomes(pool).is_blocked(sha)
    assert not await PostgresOutcomes(pool).is_blocked("ef" * 32)
