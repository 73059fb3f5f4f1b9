from __future__ import annotations

from datetime import timedelta

import pytest

from imagery.common.domain import ImageRecord, ImageStatus
from imagery.common.errors import DependencyUnavailable, ImageryError
from imagery.common.ids import is_image_id, new_image_id
from imagery.common.storage_keys import GLOBAL_SCOPE, upload_key
from imagery.processor.ports import VerifiedImage
from imagery.upload.use_cases import CreateUploadUrl, DeleteImage
from tests.fakes import FakeBlob, FakeClock, FakeObjects, FakeSigner, InMemoryImageRepository


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
    with pytest.raises(ImageryError):
        await _use_case(repo, signer)(content_type=content_type, file_name=file_name)
    assert repo.records == {}
    assert signer.signed == []


async def test_no_url_leaves_when_the_record_cannot_be_saved() -> None:
    class BrokenRepository(InMemoryImageRepository):
        async def save(self, record: ImageRecord) -> None:
            raise DependencyUnavailable("Postgres is down: retry shortly.")

    with pytest.raises(DependencyUnavailable):
        await _use_case(BrokenRepository(), FakeSigner())(
            content_type="image/png", file_name="a.png"
        )


async def _ready(repo: InMemoryImageRepository, sha: str) -> str:
    image_id = new_image_id()
    await repo.save(
        ImageRecord(
            image_id,
            ImageStatus.READY,
            "image/png",
            "a.png",
            upload_key(GLOBAL_SCOPE, image_id),
            sha256=sha,
        )
    )
    blob = repo.blobs.setdefault(
        sha, FakeBlob(VerifiedImage(sha, "png", 1, 1, 1), (), repo.clock(), stored=True)
    )
    blob.references += 1
    return image_id


async def test_deleting_shared_content_keeps_it_until_the_last_reference() -> None:
    repo, objects = InMemoryImageRepository(), FakeObjects()
    first, second = await _ready(repo, "a" * 64), await _ready(repo, "a" * 64)
    delete = DeleteImage(repo, objects)
    assert await delete(image_id=first) is True
    assert repo.blobs["a" * 64].references == 1
    assert await delete(image_id=first) is False, "deleting twice is harmless"
    assert await delete(image_id=second) is True
    assert repo.blobs["a" * 64].references == 0, "a tombstone for the collector"


async def test_deleting_a_pending_image_removes_its_upload_object() -> None:
    repo, objects = InMemoryImageRepository(), FakeObjects()
    image_id = new_image_id()
    await repo.save(
        ImageRecord(
            image_id, ImageStatus.PENDING, "image/png", "a.png", upload_key(GLOBAL_SCOPE, image_id)
        )
    )
    objects.objects[upload_key(GLOBAL_SCOPE, image_id)] = (b"bytes", "image/png")
    assert await DeleteImage(repo, objects)(image_id=image_id)
    assert objects.objects == {} and repo.records == {}


async def test_delete_image_validates_the_id() -> None:
    with pytest.raises(ImageryError):
        await DeleteImage(InMemoryImageRepository(), FakeObjects())(image_id="nope")
