"""CreateUploadUrl's labels and request ids (AIP-155) over the fakes: what a caller sees when
it labels an upload, retries a call, reuses an id, or races itself."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from imagery.common.domain import ImageStatus
from imagery.common.errors import ImageryError
from imagery.common.tenancy import ProjectSettings
from imagery.upload.use_cases import CreateUploadUrl, DeleteImage, UploadRequest
from imagery.upload.validation import validate_labels, validate_request_id
from tests.fakes import (
    FakeClock,
    FakeObjects,
    FakeSigner,
    FakeUploadRequests,
    InMemoryImageRepository,
)
from tests.principals import CALLER, OTHER, caller, policy

SHA = "ab" * 32


class Stack:
    """The use case over fakes that share one clock and one set of records."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.images = InMemoryImageRepository(self.clock)
        self.requests = FakeUploadRequests(self.images)
        self.signer = FakeSigner()
        self.create = CreateUploadUrl(
            self.images,
            self.signer,
            requests=self.requests,
            expiry_seconds=300,
            policy=policy(max_upload_bytes=1234),
            clock=self.clock,
        )


def _request(request_id: str = "req-1", **changes: object) -> UploadRequest:
    fields: dict[str, object] = {
        "content_type": "image/png",
        "file_name": "cat.png",
        "labels": {"team": "web", "env": "prod"},
        "request_id": request_id,
    }
    fields.update(changes)
    return UploadRequest(**fields)  # type: ignore[arg-type]


async def test_labels_are_stored_with_the_record() -> None:
    stack = Stack()
    ticket = await stack.create(CALLER, _request(request_id=""))
    assert stack.images.records[ticket.image_id].labels == {"team": "web", "env": "prod"}


@pytest.mark.parametrize(
    ("labels", "field"),
    [
        ({"Bad Key": "x"}, 'labels["Bad Key"]'),
        ({"1st": "x"}, 'labels["1st"]'),
        ({"": "x"}, 'labels[""]'),
        ({"k" * 64: "x"}, f'labels["{"k" * 64}"]'),
        ({"size": "Large"}, 'labels["size"]'),
        ({"size": "v" * 64}, 'labels["size"]'),
        ({"ok": "fine", "size": "a b"}, 'labels["size"]'),
        ({f"k{i}": "" for i in range(65)}, "labels"),
    ],
)
async def test_bad_labels_are_refused_naming_the_entry_and_change_nothing(
    labels: dict[str, str], field: str
) -> None:
    stack = Stack()
    with pytest.raises(ImageryError) as refused:
        await stack.create(CALLER, _request(labels=labels))
    assert refused.value.reason == "INVALID_ARGUMENT"
    assert [v.field for v in refused.value.violations] == [field]
    assert refused.value.message.startswith(field) and refused.value.message.endswith(".")
    assert stack.images.records == {} and stack.requests.kept == {} and stack.signer.signed == []


def test_label_rules_at_their_edges() -> None:
    edge = {"k" * 63: "v" * 63, "a": "", "a-b_9": "0-_z"}
    assert validate_labels(edge) == edge
    assert validate_labels({f"k{i}": "" for i in range(64)}) == {f"k{i}": "" for i in range(64)}


@pytest.mark.parametrize("request_id", ["x" * 65, "with space", "ünïcode", "a/b", "a\nb"])
async def test_a_malformed_request_id_is_refused_and_changes_nothing(request_id: str) -> None:
    stack = Stack()
    with pytest.raises(ImageryError) as refused:
        await stack.create(CALLER, _request(request_id))
    assert refused.value.reason == "INVALID_ARGUMENT"
    assert [v.field for v in refused.value.violations] == ["request_id"]
    assert stack.images.records == {}


def test_request_ids_take_uuids_and_the_documented_characters() -> None:
    for good in ("0f8fad5b-d9cb-469f-a165-70867728950e", "a", "A.b_c:d-9", "x" * 64):
        assert validate_request_id(good) == good
    assert validate_request_id("") is None


async def test_a_retry_answers_the_same_image_with_a_fresh_url_and_saves_nothing() -> None:
    stack = Stack()
    first = await stack.create(CALLER, _request())
    stack.clock.advance(600)  # the first URL has expired
    again = await stack.create(CALLER, _request(labels={"env": "prod", "team": "web"}))
    assert again.image_id == first.image_id, "labels in another order are the same labels"
    assert len(stack.images.records) == 1
    assert again.expire_time > first.expire_time, "a URL of its own"
    assert stack.signer.signed[-1][0] == f"uploads/{first.image_id}"
    assert stack.images.usage_of(CALLER.project_id).uploads_today == 1


async def test_a_retry_is_not_refused_by_a_quota_its_first_call_filled() -> None:
    stack = Stack()
    full = caller(settings=ProjectSettings(quota_images=1, quota_uploads_per_day=1))
    first = await stack.create(full, _request())
    assert (await stack.create(full, _request())).image_id == first.image_id
    with pytest.raises(ImageryError) as refused:
        await stack.create(full, _request("req-2"))
    assert refused.value.reason == "QUOTA_EXCEEDED", "a new request counts"


@pytest.mark.parametrize(
    "changes",
    [
        {"file_name": "dog.png"},
        {"content_type": "image/jpeg"},
        {"labels": {"team": "web"}},
        {"labels": {"team": "web", "env": "dev"}},
        {"size_bytes": 10, "sha256": SHA},
        {"method": "POST"},
    ],
)
async def test_the_same_id_with_other_fields_is_refused(changes: dict[str, Any]) -> None:
    stack = Stack()
    await stack.create(CALLER, _request())
    with pytest.raises(ImageryError) as refused:
        await stack.create(CALLER, _request(**changes))
    assert refused.value.reason == "REQUEST_ID_REUSED"
    assert [v.field for v in refused.value.violations] == ["request_id"]
    assert refused.value.metadata == {"request_id": "req-1"}
    assert len(stack.images.records) == 1


async def test_put_by_default_is_the_same_request_as_put_by_name() -> None:
    stack = Stack()
    first = await stack.create(CALLER, _request(method=""))
    assert (await stack.create(CALLER, _request(method="PUT"))).image_id == first.image_id


async def test_request_ids_are_per_project() -> None:
    stack = Stack()
    mine = await stack.create(CALLER, _request())
    theirs = await stack.create(OTHER, _request(content_type="image/jpeg"))
    assert mine.image_id != theirs.image_id and len(stack.images.records) == 2


async def test_an_id_past_its_day_starts_afresh() -> None:
    stack = Stack()
    first = await stack.create(CALLER, _request())
    stack.clock.advance(86_400)
    later = await stack.create(CALLER, _request(file_name="other.png"))
    assert later.image_id != first.image_id, "neither the same image nor REQUEST_ID_REUSED"
    assert await stack.requests.prune() == 0, "the expired row was replaced, not kept"


async def test_concurrent_calls_with_one_new_id_make_one_image() -> None:
    stack = Stack()
    tickets = await asyncio.gather(*(stack.create(CALLER, _request()) for _ in range(20)))
    assert len({t.image_id for t in tickets}) == 1
    assert list(stack.images.records) == [tickets[0].image_id]


@pytest.mark.parametrize("status", [ImageStatus.PROCESSING, ImageStatus.READY, ImageStatus.FAILED])
async def test_a_retry_after_the_upload_answers_the_image_as_it_is(status: ImageStatus) -> None:
    stack = Stack()
    first = await stack.create(CALLER, _request())
    await stack.images.update_status(first.image_id, status, failure_reason=None)
    again = await stack.create(CALLER, _request())
    assert again.image_id == first.image_id
    assert stack.images.records[first.image_id].status is status, "the retry changes nothing"


async def test_a_retry_after_the_image_was_deleted_is_not_found_and_creates_nothing() -> None:
    stack = Stack()
    first = await stack.create(CALLER, _request())
    assert await DeleteImage(stack.images, FakeObjects())(CALLER, image_id=first.image_id)
    with pytest.raises(ImageryError) as refused:
        await stack.create(CALLER, _request())
    assert refused.value.reason == "IMAGE_NOT_FOUND"
    assert refused.value.metadata == {"image_id": first.image_id, "request_id": "req-1"}
    assert "send a new request_id" in refused.value.message
    assert stack.images.records == {}
    assert (await stack.create(CALLER, _request("req-2"))).image_id != first.image_id


async def test_without_a_request_id_every_call_is_a_new_image() -> None:
    stack = Stack()
    tickets = [await stack.create(CALLER, _request("")) for _ in range(3)]
    assert len({t.image_id for t in tickets}) == 3 and stack.requests.kept == {}
