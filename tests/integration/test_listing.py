"""BatchGetImages' and ListImages' reads on real Postgres: every filter as SQL, keyset pages
that stay stable while images are created, and one project never seeing another's."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from imagery.common.db.images import PostgresImageRepository
from imagery.common.db.listing import PostgresImageListing, page_query
from imagery.common.db.projects import PostgresProjects
from imagery.common.domain import ImageRecord, ImageStatus
from imagery.common.ids import new_image_id
from imagery.common.listing import Filter, PagePosition
from imagery.common.storage_keys import GLOBAL_SCOPE, upload_key
from imagery.common.tenancy import DEFAULT_PROJECT, Actor, Project, ProjectSettings
from imagery.delivery.filtering import parse_filter
from imagery.delivery.use_cases import ListImages
from tests.principals import CALLER

pytestmark = pytest.mark.integration
T0 = datetime(2026, 12, 1, tzinfo=UTC)


async def _image(
    pool: asyncpg.Pool,
    *,
    minutes: int,
    status: ImageStatus = ImageStatus.READY,
    labels: dict[str, str] | None = None,
    project: str = DEFAULT_PROJECT,
) -> str:
    image_id = new_image_id()
    record = ImageRecord(
        image_id,
        ImageStatus.PENDING,
        "image/png",
        "a.png",
        upload_key(GLOBAL_SCOPE, image_id),
        project_id=project,
    )
    await PostgresImageRepository(pool).save(record, principal="key:test")
    await pool.execute(
        "UPDATE image_records SET status = $2, labels = $3::jsonb, created_at = $4,"
        " failure_reason = $5 WHERE id = $1",
        image_id,
        status.value,
        json.dumps(labels or {}),
        T0 + timedelta(minutes=minutes),
        "CORRUPT" if status is ImageStatus.FAILED else None,
    )
    return image_id


@pytest.fixture
async def images(pool: asyncpg.Pool) -> dict[str, str]:
    return {
        "feed_ready": await _image(pool, minutes=1, labels={"team": "feed", "env": "prod"}),
        "feed_pending": await _image(
            pool, minutes=2, status=ImageStatus.PENDING, labels={"team": "feed"}
        ),
        "ads_failed": await _image(
            pool, minutes=3, status=ImageStatus.FAILED, labels={"team": "ads"}
        ),
        "bare_ready": await _image(pool, minutes=4),
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ["bare_ready", "ads_failed", "feed_pending", "feed_ready"]),
        ("status = READY", ["bare_ready", "feed_ready"]),
        ("status != READY", ["ads_failed", "feed_pending"]),
        ('labels.team = "feed"', ["feed_pending", "feed_ready"]),
        ("labels.team != feed", ["bare_ready", "ads_failed"]),  # no label: not "feed"
        ("labels:env", ["feed_ready"]),
        ("NOT labels:team", ["bare_ready"]),
        ("NOT labels.team = feed", ["bare_ready", "ads_failed"]),  # as != does
        ("NOT (labels.team = feed OR status = FAILED)", ["bare_ready"]),
        ("labels.team = feed AND status = READY", ["feed_ready"]),
        ("status = FAILED OR labels.env = prod", ["ads_failed", "feed_ready"]),
        ('create_time > "2026-12-01T00:02:00Z"', ["bare_ready", "ads_failed"]),
        ('create_time <= "2026-12-01T01:02:00+01:00"', ["feed_pending", "feed_ready"]),
        ('create_time = "2026-12-01T00:03:00Z"', ["ads_failed"]),
        ('labels.team = "it\'s"', []),
    ],
)
async def test_each_filter_selects_what_it_says(
    pool: asyncpg.Pool, images: dict[str, str], text: str, expected: list[str]
) -> None:
    found = await PostgresImageListing(pool).list_page(
        DEFAULT_PROJECT, parse_filter(text), None, 100
    )
    names = {image_id: name for name, image_id in images.items()}
    assert [names[r.id] for r in found] == expected


async def test_records_come_back_whole(pool: asyncpg.Pool, images: dict[str, str]) -> None:
    (record,) = await PostgresImageRepository(pool).find_many(
        DEFAULT_PROJECT, [images["feed_ready"]]
    )
    assert record.labels == {"team": "feed", "env": "prod"}
    assert (record.status, record.file_name) == (ImageStatus.READY, "a.png")
    assert record.created_at == T0 + timedelta(minutes=1)


async def test_another_projects_images_are_never_read(
    pool: asyncpg.Pool, images: dict[str, str]
) -> None:
    team = Project("team-b", "Team B", ProjectSettings(), secrets.token_hex(16))
    await PostgresProjects(pool).create_project(team, Actor("cli:test"))
    theirs = await _image(pool, minutes=9, project="team-b")
    listing = PostgresImageListing(pool)
    mine = await listing.list_page(DEFAULT_PROJECT, None, None, 100)
    assert theirs not in {r.id for r in mine} and len(mine) == len(images)
    assert await PostgresImageRepository(pool).find_many(
        DEFAULT_PROJECT, [theirs, images["bare_ready"]]
    ) == [r for r in mine if r.id == images["bare_ready"]]
    assert [r.id for r in await listing.list_page("team-b", None, None, 100)] == [theirs]


async def test_pages_stay_stable_while_images_are_created(pool: asyncpg.Pool) -> None:
    """Keyset pages: images created between pages (newer, so before the cursor) and images
    with the same create_time as the page's last one neither repeat nor go missing."""
    first = [await _image(pool, minutes=m // 2) for m in range(11)]  # pairs share a minute
    use_case = ListImages(PostgresImageListing(pool))
    seen: list[str] = []
    token = ""
    for _ in range(20):
        page = await use_case(CALLER, page_size=3, page_token=token, filter="")
        seen += [r.id for r in page.images]
        for _ in range(2):  # created while the client pages: newest, before every cursor
            await _image(pool, minutes=60)
        token = page.next_page_token
        if not token:
            break
    expected = sorted(first, key=lambda i: i)  # ties by id ...
    expected.sort(key=lambda i: first.index(i) // 2, reverse=True)  # ... newest minute first
    # each page, exactly in order; the images created meanwhile are newer than every cursor,
    # so they belong to a listing started later and are on none of these pages
    assert seen == expected


@pytest.mark.parametrize("match", [None, parse_filter("status = READY AND labels:team")])
async def test_a_later_page_starts_with_an_index_seek(
    pool: asyncpg.Pool, match: Filter | None
) -> None:
    """ListImages' own SQL for a page after a cursor: the index gives the order (no sort) and
    the cursor bounds the index scan itself, so page 1,000 reads no more than page 1."""
    after = PagePosition(T0, new_image_id())
    sql, params = page_query(DEFAULT_PROJECT, match, after, 101)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN {sql}", *params))
    assert "image_records_project_created_idx" in plan, plan
    records = plan.split("SubPlan")[0]  # the subplan gathers one image's variants
    assert "Sort" not in records, plan
    index_cond = next(line for line in plan.splitlines() if "Index Cond" in line)
    assert "project_id" in index_cond and "created_at <=" in index_cond, plan
