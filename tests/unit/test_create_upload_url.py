from __future__ import annotations

from datetime import timedelta

import pytest

from imagery.common.domain import ImageRecord, ImageStatus
from imagery.common.errors import InvalidArgument, Unavailable
from imagery.common.ids import is_image_id, new_image_id, upload_key
from imagery.upload.use_cases import CreateUploadUrl, DeleteImage
from tests.fakes import FakeClock, FakeObjects, FakeSigner, InMemoryImageRepository


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


class RecordingCollector:
    def __init__(self, fail: bool = False) -> None:
        self.collected: list[str] = []
        self.fail = fail

    async def collect(self, sha256: str) -> bool:
        if self.fail:
            raise Unavailable("S3 DeleteObject failed: retry shortly.")
        self.collected.append(sha256)
        return True


async def _ready(repo: InMemoryImageRepository, sha: str) -> str:
    image_id = new_image_id()
    await repo.save(
        ImageRecord(
            image_id, ImageStatus.READY, "image/png", "a.png", upload_key(image_id), sha256=sha
        )
    )
    assert repo.blob_counts is not None
    repo.blob_counts[sha] = repo.blob_counts.get(sha, 0) + 1
    return image_id


async def test_deleting_shared_content_keeps_it_until_the_last_reference() -> None:
    repo, objects, collector = InMemoryImageRepository(), FakeObjects(), RecordingCollector()
    repo.blob_counts = {}
    first, second = await _ready(repo, "a" * 64), await _ready(repo, "a" * 64)
    delete = DeleteImage(repo, objects, collector)
    assert await delete(image_id=first) is True
    assert collector.collected == []
    assert await delete(image_id=first) is False, "deleting twice is harmless"
    assert await delete(image_id=second) is True
    assert collector.collected == ["a" * 64]


async def test_deleting_a_pending_image_removes_its_upload_object() -> None:
    repo, objects = InMemoryImageRepository(), FakeObjects()
    image_id = new_image_id()
    await repo.save(
        ImageRecord(image_id, ImageStatus.PENDING, "image/png", "a.png", upload_key(image_id))
    )
    objects.objects[upload_key(image_id)] = (b"bytes", "image/png")
    assert await DeleteImage(repo, objects, RecordingCollector())(image_id=image_id)
    assert objects.objects == {} and repo.records == {}


async def test_a_failed_content_deletion_does_not_fail_the_delete() -> None:
    repo = InMemoryImageRepository()
    repo.blob_counts = {}
    image_id = await _ready(repo, "b" * 64)
    assert await DeleteImage(repo, FakeObjects(), RecordingCollector(fail=True))(image_id=image_id)
    assert repo.records == {}


async def test_delete_image_validates_the_id() -> None:
    with pytest.raises(InvalidArgument):
        await DeleteImage(InMemoryImageRepository(), FakeObjects(), RecordingCollector())(
            image_id="nope"
        )
