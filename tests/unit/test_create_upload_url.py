from __future__ import annotations

import base64
import hashlib
from datetime import timedelta

import pytest

from imagery.common.domain import ImageRecord, ImageStatus
from imagery.common.errors import DependencyUnavailable, ImageryError
from imagery.common.ids import is_image_id, new_image_id
from imagery.common.quotas import UNLIMITED, Quotas
from imagery.common.storage_keys import GLOBAL_SCOPE, upload_key
from imagery.common.tenancy import ProjectSettings
from imagery.processor.ports import VerifiedImage
from imagery.upload.use_cases import CreateUploadUrl, DeleteImage, UploadRequest
from tests.fakes import (
    FakeBlob,
    FakeClock,
    FakeObjects,
    FakeSigner,
    FakeUploadRequests,
    InMemoryImageRepository,
)
from tests.principals import CALLER, OTHER, caller, policy


def _use_case(
    repo: InMemoryImageRepository, signer: FakeSigner, clock: FakeClock | None = None
) -> CreateUploadUrl:
    return CreateUploadUrl(
        repo,
        signer,
        requests=FakeUploadRequests(repo),
        expiry_seconds=300,
        policy=policy(max_upload_bytes=1234),
        clock=clock or FakeClock(),
    )


async def test_creates_a_pending_record_under_an_uploads_key() -> None:
    repo, signer, clock = InMemoryImageRepository(), FakeSigner(), FakeClock()
    ticket = await _use_case(repo, signer, clock)(
        CALLER, UploadRequest(content_type="image/png", file_name="cat.png")
    )

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
    ticket = await _use_case(repo, FakeSigner())(
        CALLER, UploadRequest(content_type="image/gif", file_name="../../x.gif")
    )
    assert "x.gif" not in repo.records[ticket.image_id].object_key


async def test_every_call_gets_a_new_id() -> None:
    repo = InMemoryImageRepository()
    use_case = _use_case(repo, FakeSigner())
    ids = {
        (
            await use_case(CALLER, UploadRequest(content_type="image/jpeg", file_name="a.jpg"))
        ).image_id
        for _ in range(50)
    }
    assert len(ids) == 50 == len(repo.records)


@pytest.mark.parametrize(
    ("content_type", "file_name"),
    [("image/*", "a.png"), ("image/png", ""), ("image/png", "a\x00b"), ("IMAGE/PNG", "a.png")],
)
async def test_bad_input_changes_nothing(content_type: str, file_name: str) -> None:
    repo, signer = InMemoryImageRepository(), FakeSigner()
    with pytest.raises(ImageryError):
        await _use_case(repo, signer)(
            CALLER, UploadRequest(content_type=content_type, file_name=file_name)
        )
    assert repo.records == {}
    assert signer.signed == []


async def test_no_url_leaves_when_the_record_cannot_be_saved() -> None:
    class BrokenRepository(InMemoryImageRepository):
        async def save(
            self, record: ImageRecord, *, principal: str = "", quotas: Quotas = UNLIMITED
        ) -> None:
            raise DependencyUnavailable("Postgres is down: retry shortly.")

    with pytest.raises(DependencyUnavailable):
        await _use_case(BrokenRepository(), FakeSigner())(
            CALLER, UploadRequest(content_type="image/png", file_name="a.png")
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
            content=sha,
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
    assert await delete(CALLER, image_id=first) is True
    assert repo.blobs["a" * 64].references == 1
    assert await delete(CALLER, image_id=first) is False, "deleting twice is harmless"
    assert await delete(CALLER, image_id=second) is True
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
    assert await DeleteImage(repo, objects)(CALLER, image_id=image_id)
    assert objects.objects == {} and repo.records == {}


async def test_delete_image_validates_the_id() -> None:
    with pytest.raises(ImageryError):
        await DeleteImage(InMemoryImageRepository(), FakeObjects())(CALLER, image_id="nope")


async def test_a_project_accepts_only_its_content_types_and_gets_its_size_limit() -> None:
    repo = InMemoryImageRepository()
    chosen = ProjectSettings(content_types=("image/png",), max_upload_bytes=999)
    narrow = caller(settings=chosen)
    use_case = _use_case(repo, FakeSigner())
    ticket = await use_case(narrow, UploadRequest(content_type="image/png", file_name="a.png"))
    assert ticket.max_size_bytes == 999
    with pytest.raises(ImageryError) as refused:
        await use_case(narrow, UploadRequest(content_type="image/jpeg", file_name="a.jpg"))
    assert refused.value.reason == "UNSUPPORTED_CONTENT_TYPE"
    assert "image/png" in refused.value.message and "image/jpeg, " not in refused.value.message
    assert len(repo.records) == 1, "a refused call stores nothing"


async def test_another_projects_image_cannot_be_deleted_and_stays() -> None:
    repo, objects = InMemoryImageRepository(), FakeObjects()
    ticket = await _use_case(repo, FakeSigner())(
        CALLER, UploadRequest(content_type="image/png", file_name="a")
    )
    assert await DeleteImage(repo, objects)(OTHER, image_id=ticket.image_id) is False
    assert ticket.image_id in repo.records
    assert repo.records[ticket.image_id].project_id == CALLER.project_id


SHA = hashlib.sha256(b"declared bytes").hexdigest()


async def test_a_declared_size_and_checksum_are_signed_and_reserved() -> None:
    repo, signer = InMemoryImageRepository(), FakeSigner()
    ticket = await _use_case(repo, signer)(
        CALLER, UploadRequest("image/png", "a.png", size_bytes=14, sha256=SHA)
    )
    assert ticket.required_headers == {
        "Content-Type": "image/png",
        "Content-Length": "14",
        "x-amz-checksum-sha256": base64.b64encode(
            hashlib.sha256(b"declared bytes").digest()
        ).decode(),
    }
    assert repo.records[ticket.image_id].reserved_bytes == 14
    undeclared = await _use_case(repo, signer)(CALLER, UploadRequest("image/png", "b.png"))
    assert repo.records[undeclared.image_id].reserved_bytes == 1234, "the maximum size"


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (UploadRequest("image/png", "a.png", size_bytes=1235), "size_bytes"),
        (UploadRequest("image/png", "a.png", size_bytes=0), "size_bytes"),
        (UploadRequest("image/png", "a.png", sha256=SHA.upper()), "sha256"),
        (UploadRequest("image/png", "a.png", sha256=SHA[:63]), "sha256"),
        (UploadRequest("image/png", "a.png", method="PATCH"), "upload_method"),
        (UploadRequest("image/png", "a.png", size_bytes=3, method="POST"), "upload_method"),
    ],
)
async def test_a_bad_declaration_is_refused_and_changes_nothing(
    request_: UploadRequest, field: str
) -> None:
    repo, signer = InMemoryImageRepository(), FakeSigner()
    with pytest.raises(ImageryError) as refused:
        await _use_case(repo, signer)(CALLER, request_)
    assert refused.value.reason == "INVALID_ARGUMENT"
    assert refused.value.violations[0].field == field
    assert repo.records == {} and signer.signed == []


async def test_post_returns_a_form_capped_at_the_maximum_size() -> None:
    ticket = await _use_case(InMemoryImageRepository(), FakeSigner())(
        CALLER, UploadRequest("image/png", "a.png", method="POST")
    )
    assert (ticket.method, ticket.required_headers) == ("POST", {})
    assert ticket.form_fields["policy"] == "<= 1234"


async def test_a_project_can_require_the_declaration() -> None:
    strict = caller(settings=ProjectSettings(require_declared_upload=True))
    repo = InMemoryImageRepository()
    use_case = _use_case(repo, FakeSigner())
    for request_ in (
        UploadRequest("image/png", "a.png", size_bytes=14),
        UploadRequest("image/png", "a.png", sha256=SHA),
        UploadRequest("image/png", "a.png", method="POST"),
    ):
        with pytest.raises(ImageryError) as refused:
            await use_case(strict, request_)
        assert refused.value.reason == "DECLARATION_REQUIRED"
    assert repo.records == {}
    ticket = await use_case(strict, UploadRequest("image/png", "a.png", size_bytes=14, sha256=SHA))
    assert ticket.required_headers["Content-Length"] == "14"


async def test_the_image_quota_counts_what_is_stored_not_what_failed() -> None:
    repo = InMemoryImageRepository()
    limited = caller(settings=ProjectSettings(quota_images=2))
    use_case = _use_case(repo, FakeSigner())
    first = await use_case(limited, UploadRequest("image/png", "a.png"))
    await use_case(limited, UploadRequest("image/png", "b.png"))
    with pytest.raises(ImageryError) as refused:
        await use_case(limited, UploadRequest("image/png", "c.png"))
    assert refused.value.reason == "QUOTA_EXCEEDED"
    assert refused.value.metadata == {"quota": "quota_images", "limit": "2", "usage": "2"}
    assert refused.value.quota_violations[0][0] == "projects/default"
    assert len(repo.records) == 2
    await repo.update_status(first.image_id, ImageStatus.FAILED, failure_reason="CORRUPT")
    again = await use_case(limited, UploadRequest("image/png", "c.png"))
    assert again.image_id in repo.records, "FAILED images do not count"


async def test_the_byte_quota_reserves_the_declared_or_the_maximum_size() -> None:
    repo = InMemoryImageRepository()
    limited = caller(settings=ProjectSettings(quota_bytes=2000))
    use_case = _use_case(repo, FakeSigner())
    await use_case(limited, UploadRequest("image/png", "a.png"))  # reserves 1234
    with pytest.raises(ImageryError) as refused:
        await use_case(limited, UploadRequest("image/png", "b.png"))
    assert refused.value.metadata["quota"] == "quota_bytes"
    assert "declare size_bytes" in refused.value.message
    await use_case(limited, UploadRequest("image/png", "b.png", size_bytes=766, sha256=SHA))


async def test_the_daily_quota_starts_again_at_midnight_utc() -> None:
    clock = FakeClock()
    repo = InMemoryImageRepository(clock)
    limited = caller(settings=ProjectSettings(quota_uploads_per_day=1))
    use_case = _use_case(repo, FakeSigner(), clock)
    done = await use_case(limited, UploadRequest("image/png", "a.png"))
    await repo.update_status(done.image_id, ImageStatus.FAILED, failure_reason="CORRUPT")
    with pytest.raises(ImageryError) as refused:
        await use_case(limited, UploadRequest("image/png", "b.png"))
    assert refused.value.metadata["quota"] == "quota_uploads_per_day", "failed ones count"
    assert "00:00 UTC" in refused.value.message
    clock.advance(86_400)
    await use_case(limited, UploadRequest("image/png", "b.png"))
