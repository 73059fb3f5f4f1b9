"""UpdateImage over the fakes, and its servicer: labels replaced whole, nothing else changes,
bad input is refused with the field named and changes nothing."""

from __future__ import annotations

from typing import cast

import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from imagery.common.errors import ImageryError
from imagery.common.grpc.auth import set_principal
from imagery.common.grpc.images import image_to_proto
from imagery.common.ids import new_image_id
from imagery.upload.grpc_api.servicer import UploadServiceServicer
from imagery.upload.use_cases import CreateUploadUrl, DeleteImage, UpdateImage, UploadRequest
from imagery.v1 import image_pb2
from imagery.v1 import upload_service_pb2 as pb
from tests.fakes import FakeClock, FakeObjects, FakeSigner, FakeUploadRequests
from tests.fakes import InMemoryImageRepository as Images
from tests.principals import CALLER, OTHER, policy


async def _image(images: Images, labels: dict[str, str] | None = None) -> str:
    create = CreateUploadUrl(
        images,
        FakeSigner(),
        requests=FakeUploadRequests(images),
        expiry_seconds=300,
        policy=policy(),
        clock=images.clock,
    )
    ticket = await create(CALLER, UploadRequest("image/png", "a.png", labels=labels or {}))
    return ticket.image_id


@pytest.mark.parametrize("mask", [["labels"], ["*"], ["labels", "labels"]])
async def test_labels_are_replaced_whole_and_updated_at_moves(mask: list[str]) -> None:
    images = Images(FakeClock())
    image_id = await _image(images, {"team": "web", "env": "prod"})
    before = images.records[image_id]
    updated = await UpdateImage(images)(
        CALLER, image_id=image_id, update_mask=mask, labels={"env": "dev"}
    )
    assert updated.labels == {"env": "dev"}, "replaced, not merged"
    assert updated == images.records[image_id]
    assert updated.updated_at is not None and before.updated_at is not None
    assert updated.updated_at > before.updated_at
    assert (updated.status, updated.file_name) == (before.status, before.file_name)
    cleared = await UpdateImage(images)(CALLER, image_id=image_id, update_mask=mask, labels={})
    assert cleared.labels == {}


@pytest.mark.parametrize(
    ("image_id", "mask", "labels", "reason", "field"),
    [
        ("nope", ["labels"], {}, "INVALID_IMAGE_ID", "image.image_id"),
        ("", ["labels"], {}, "INVALID_IMAGE_ID", "image.image_id"),
        (None, [], {"a": "b"}, "INVALID_ARGUMENT", "update_mask"),
        (None, ["file_name"], {"a": "b"}, "INVALID_ARGUMENT", "update_mask"),
        (None, ["labels", "status"], {"a": "b"}, "INVALID_ARGUMENT", "update_mask"),
        (None, ["image.labels"], {"a": "b"}, "INVALID_ARGUMENT", "update_mask"),
        (None, ["labels.team"], {"a": "b"}, "INVALID_ARGUMENT", "update_mask"),
        (None, ["labels"], {"Team": "web"}, "INVALID_ARGUMENT", 'image.labels["Team"]'),
        (None, ["*"], {"team": "Web"}, "INVALID_ARGUMENT", 'image.labels["team"]'),
    ],
)
async def test_bad_input_is_refused_naming_the_field_and_changes_nothing(
    image_id: str | None, mask: list[str], labels: dict[str, str], reason: str, field: str
) -> None:
    images = Images(FakeClock())
    mine = await _image(images, {"team": "web"})
    before = images.records[mine]
    with pytest.raises(ImageryError) as refused:
        await UpdateImage(images)(
            CALLER, image_id=mine if image_id is None else image_id, update_mask=mask, labels=labels
        )
    assert refused.value.reason == reason
    assert [v.field for v in refused.value.violations] == [field]
    assert refused.value.message.endswith(".") and refused.value.message.count(". ") == 0
    assert images.records[mine] == before


async def test_an_unknown_deleted_or_other_projects_image_is_not_found() -> None:
    images = Images(FakeClock())
    mine, gone = await _image(images, {"team": "web"}), await _image(images)
    await DeleteImage(images, FakeObjects())(CALLER, image_id=gone)
    update = UpdateImage(images)
    for caller, image_id in ((CALLER, new_image_id()), (CALLER, gone), (OTHER, mine)):
        with pytest.raises(ImageryError) as refused:
            await update(caller, image_id=image_id, update_mask=["labels"], labels={"x": "y"})
        assert refused.value.reason == "IMAGE_NOT_FOUND"
        assert refused.value.metadata == {"image_id": image_id}
    assert images.records[mine].labels == {"team": "web"}


async def test_the_servicer_passes_the_request_and_answers_the_image() -> None:
    images = Images(FakeClock())
    image_id = await _image(images)
    servicer = UploadServiceServicer(
        cast(CreateUploadUrl, None), cast(DeleteImage, None), UpdateImage(images)
    )
    set_principal(CALLER)
    request = pb.UpdateImageRequest(
        image=image_pb2.Image(image_id=image_id, labels={"team": "web"}, file_name="ignored"),
        update_mask=FieldMask(paths=["labels"]),
    )
    response = await servicer.UpdateImage(request, None)  # type: ignore[arg-type]
    assert response.image == image_to_proto(images.records[image_id])
    assert dict(response.image.labels) == {"team": "web"}
    assert response.image.file_name == "a.png", "only the masked field changes"


async def test_the_servicer_maps_labels_and_request_id_of_create_upload_url() -> None:
    images = Images(FakeClock())
    requests = FakeUploadRequests(images)
    create = CreateUploadUrl(
        images, FakeSigner(), requests=requests, expiry_seconds=300, policy=policy()
    )
    servicer = UploadServiceServicer(create, cast(DeleteImage, None), cast(UpdateImage, None))
    set_principal(CALLER)
    request = pb.CreateUploadUrlRequest(
        content_type="image/png", file_name="a.png", labels={"team": "web"}, request_id="r-1"
    )
    first = await servicer.CreateUploadUrl(request, None)  # type: ignore[arg-type]
    again = await servicer.CreateUploadUrl(request, None)  # type: ignore[arg-type]
    assert first.image_id == again.image_id
    assert images.records[first.image_id].labels == {"team": "web"}
    assert (CALLER.project_id, "r-1") in requests.kept
