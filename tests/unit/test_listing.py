"""BatchGetImages and ListImages over a fake lister, and the AIP-160 filter parser."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from imagery.common.domain import ImageRecord, ImageStatus
from imagery.common.errors import ImageryError, InvalidArgument
from imagery.common.ids import new_image_id
from imagery.common.listing import (
    AllOf,
    AnyOf,
    CreatedAt,
    Filter,
    HasLabel,
    LabelIs,
    Not,
    PagePosition,
    StatusIs,
)
from imagery.delivery.filtering import parse_filter
from imagery.delivery.use_cases import BatchGetImages, ListImages
from tests.principals import CALLER, OTHER

T0 = datetime(2026, 12, 1, tzinfo=UTC)


class FakeLister:
    """Newest first by created_at, then id; filters are only recorded, not applied."""

    def __init__(self, records: Sequence[ImageRecord]) -> None:
        self.records = sorted(records, key=lambda r: r.id)
        self.records.sort(key=lambda r: r.created_at or T0, reverse=True)
        self.calls: list[tuple[str, Filter | None, PagePosition | None, int]] = []

    async def find_many(self, project_id: str, image_ids: Sequence[str]) -> list[ImageRecord]:
        return [r for r in self.records if r.id in image_ids and r.project_id == project_id]

    async def list_page(
        self, project_id: str, match: Filter | None, after: PagePosition | None, size: int
    ) -> list[ImageRecord]:
        self.calls.append((project_id, match, after, size))
        mine = [r for r in self.records if r.project_id == project_id]
        if after is not None:
            mine = [
                r
                for r in mine
                if r.created_at is not None
                and (
                    r.created_at < after.created_at
                    or (r.created_at == after.created_at and r.id > after.image_id)
                )
            ]
        return mine[:size]


def _record(minutes: int, project: str = CALLER.project_id) -> ImageRecord:
    return ImageRecord(
        new_image_id(),
        ImageStatus.READY,
        "image/png",
        "a.png",
        "uploads/x",
        created_at=T0 + timedelta(minutes=minutes),
        project_id=project,
    )


async def test_batch_get_images_keeps_request_order_and_lists_the_missing() -> None:
    a, b, theirs = _record(1), _record(2), _record(3, OTHER.project_id)
    unknown = new_image_id()
    result = await BatchGetImages(FakeLister([a, b, theirs]))(
        CALLER, image_ids=[b.id, unknown, a.id, theirs.id, b.id]
    )
    assert [r.id for r in result.images] == [b.id, a.id]
    assert result.not_found_image_ids == [unknown, theirs.id]


@pytest.mark.parametrize(
    ("ids", "reason"),
    [([], "NO_IMAGE_IDS"), ([new_image_id() for _ in range(101)], "TOO_MANY_IMAGE_IDS")],
)
async def test_batch_get_images_limits(ids: list[str], reason: str) -> None:
    with pytest.raises(ImageryError) as refused:
        await BatchGetImages(FakeLister([]))(CALLER, image_ids=ids)
    assert refused.value.reason == reason
    hundred = [new_image_id() for _ in range(100)]
    result = await BatchGetImages(FakeLister([]))(CALLER, image_ids=hundred)
    assert result.not_found_image_ids == hundred


async def test_pages_follow_each_other_without_gaps_or_repeats() -> None:
    same_minute = [_record(5) for _ in range(3)]  # ties are ordered by id
    records = [_record(m) for m in range(7)] + same_minute
    lister = FakeLister(records)
    use_case = ListImages(lister)
    seen: list[str] = []
    token, pages = "", 0
    while True:
        page = await use_case(CALLER, page_size=3, page_token=token, filter="")
        seen += [r.id for r in page.images]
        pages += 1
        if not page.next_page_token:
            break
        token = page.next_page_token
    assert seen == [r.id for r in lister.records]
    assert pages == 4 and all(size == 4 for *_, size in lister.calls), "one extra row, no count"


async def test_a_page_token_only_works_with_its_filter() -> None:
    use_case = ListImages(FakeLister([_record(m) for m in range(3)]))
    page = await use_case(CALLER, page_size=1, page_token="", filter="status = READY")
    assert page.next_page_token
    await use_case(CALLER, page_size=1, page_token=page.next_page_token, filter="status = READY")
    with pytest.raises(InvalidArgument) as other_filter:
        await use_case(CALLER, page_size=1, page_token=page.next_page_token, filter="")
    assert other_filter.value.violations[0].field == "page_token"
    for garbage in ("x", "e30", page.next_page_token[:-3] + "AAA"):
        with pytest.raises(InvalidArgument):
            await use_case(CALLER, page_size=1, page_token=garbage, filter="status = READY")


@pytest.mark.parametrize("size", [-1, 1001])
async def test_page_size_outside_the_range_is_refused(size: int) -> None:
    with pytest.raises(InvalidArgument) as refused:
        await ListImages(FakeLister([]))(CALLER, page_size=size, page_token="", filter="")
    assert refused.value.violations[0].field == "page_size"


async def test_page_size_zero_means_the_default() -> None:
    lister = FakeLister([])
    await ListImages(lister)(CALLER, page_size=0, page_token="", filter="labels:team")
    assert lister.calls == [(CALLER.project_id, HasLabel("team"), None, 101)]


@pytest.mark.parametrize(
    ("text", "tree"),
    [
        ("", None),
        ("status = READY", StatusIs("=", ImageStatus.READY)),
        ("status != IMAGE_STATUS_FAILED", StatusIs("!=", ImageStatus.FAILED)),
        ('labels.team = "feed"', LabelIs("=", "team", "feed")),
        ("labels.team != my-team", LabelIs("!=", "team", "my-team")),
        ("labels:team", HasLabel("team")),
        (r'labels.a = "\q\tb"', LabelIs("=", "a", "\\q\tb")),  # unknown escapes kept
        ("-labels:team", Not(HasLabel("team"))),
        (
            'create_time >= "2026-12-01T00:00:00Z"',
            CreatedAt(">=", datetime(2026, 12, 1, tzinfo=UTC)),
        ),
        (
            "status = READY AND NOT labels.a = b",
            AllOf((StatusIs("=", ImageStatus.READY), Not(LabelIs("=", "a", "b")))),
        ),
        (  # OR binds tighter than the implicit AND of a sequence (AIP-160)
            "labels:a labels:b OR labels:c",
            AllOf((HasLabel("a"), AnyOf((HasLabel("b"), HasLabel("c"))))),
        ),
        (
            "(status = READY OR status = FAILED) AND labels:a",
            AllOf(
                (
                    AnyOf((StatusIs("=", ImageStatus.READY), StatusIs("=", ImageStatus.FAILED))),
                    HasLabel("a"),
                )
            ),
        ),
    ],
)
def test_filters_parse_to_their_meaning(text: str, tree: Filter | None) -> None:
    assert parse_filter(text) == tree


def test_parentheses_nest_to_the_limit_and_quoted_ones_do_not_count() -> None:
    assert parse_filter("(" * 32 + "labels:a" + ")" * 32) == HasLabel("a")
    deep_in_a_string = '"' + "(" * 40 + '"'
    assert parse_filter(f"labels.a = {deep_in_a_string}") == LabelIs("=", "a", "(" * 40)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("status > READY", "status takes = or !="),
        ("status = DONE", "not one of PENDING, PROCESSING, READY, FAILED"),
        ("size_bytes > 10", "cannot filter on"),
        ("labels.a.b = c", "cannot filter on"),
        ("labels.a < b", "labels take = or !="),
        ('create_time > "yesterday"', "not a timestamp"),
        ('create_time > "2026-12-01T00:00:00"', "no time zone"),
        ("status = READY AND", "not valid AIP-160"),
        ("status", "not valid AIP-160"),
        ("regex(name, x)", "not valid AIP-160"),
        (" OR ".join(["labels:a"] * 51), "more than 50 comparisons"),
        ("labels:a " * 300, "characters long"),
        ('labels.a = "\\x"', "escapes are not valid"),
        ("(" * 33 + "labels:a" + ")" * 33, "nests parentheses more than 32 deep"),
        ("(" * 150 + "labels:a" + ")" * 150, "nests parentheses"),
    ],
)
def test_filters_imagery_cannot_answer_are_refused_with_what_it_can(
    text: str, problem: str
) -> None:
    with pytest.raises(InvalidArgument) as refused:
        parse_filter(text)
    assert problem in refused.value.message
    assert "filter on status" in refused.value.message
    assert refused.value.violations[0].field == "filter"
