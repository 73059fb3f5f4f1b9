from __future__ import annotations

from datetime import timedelta

import pytest

from imagery.common.domain import ImageRecord, ImageStatus
from imagery.common.errors import InvalidArgument, Unavailable, Unimplemented
from imagery.common.ids import is_image_id
from imagery.upload.use_cases import CreateUploadUrl, DeleteImage
from tests.fakes import FakeClock, FakeSigner, InMemoryImageRepository


def _use_case(
    repo: InMemoryImageRepository, signer: FakeSigner, clock: FakeClock | None = None
) -> CreateUploadUrl:
    return CreateUploadUrl(
        repo, signer, expiry_seconds=300, max_upload_bytes=1234, clock=clock or FakeClock()
    )


async def test_creates_a_pending_record_under_an_uploads_key() -> None:
    repo, signer, clock = InMemoryImageRepository(), FakeSigner(), FakeClock()
    ticket = await _use_case(repo, signer, clock)(content_type="image/png", file_name="cat.png")

    assert is_image_id(ticket.image_id)
    record = repo.records[ticket.image_id]
    assert record.status is ImageStatus.PENDING
    assert record.size_bytes is None
    assert record.object_key == f"uploads/{ticket.image_id}"
    assert (record.content_type, record.file_name) == ("image/png", "cat.png")
    assert signer.signed == [(f"uploads/{ticket.image_id}", "image/png", 300)]
    assert ticket.required_headers == {"Content-Type": "image/png"}
    assert ticket.method == "PUT"
    assert ticket.expire_time == clock.now + timedelta(seconds=300)
    assert ticket.max_size_bytes == 1234


async def test_the_users_file_name_never_becomes_the_key() -> None:
    repo = InMemoryImageRepository()
    ticket = await _use_case(repo, FakeSigner())(content_type="image/gif", file_name="../../x.gif")
    assert "x.gif" not in repo.records[ticket.image_id].object_key


async def test_every_call_gets_a_new_id() -> None:
    repo = InMemoryImageRepository()
    use_case = _use_case(repo, FakeSigner())
    ids = {
        (await use_case(content_type="image/jpeg", file_name="a.jpg")).image_id for _ in range(50)
    }
    assert len(ids) == 50 == len(repo.records)


@pytest.mark.parametrize(
    ("content_type", "file_name"),
    [("image/*", "a.png"), ("image/png", ""), ("image/png", "a\x00b"), ("IMAGE/PNG", "a.png")],
)
async def test_bad_input_changes_nothing(content_type: str, file_name: str) -> None:
    repo, signer = InMemoryImageRepository(), FakeSigner()
    with pytest.raises(InvalidArgument):
        await _use_case(repo, signer)(content_type=content_type, file_name=file_name)
    assert repo.records == {}
    assert signer.signed == []


async def test_no_url_leaves_when_the_record_cannot_be_saved() -> None:
    class BrokenRepository(InMemoryImageRepository):
        async def save(self, record: ImageRecord) -> None:
            raise Unavailable("Postgres is down: retry shortly.")

    with pytest.raises(Unavailable):
        await _use_case(BrokenRepository(), FakeSigner())(
            content_type="image/png", file_name="a.png"
        )


async def test_delete_image_validates_the_id_then_says_it_is_not_available_yet() -> None:
    with pytest.raises(InvalidArgument):
        await DeleteImage()(image_id="nope")
    with pytest.raises(Unimplemented):
        await DeleteImage()(image_id="01ARZ3NDEKTSV4RRFFQ69G5FAV")
