"""The gRPC servicers' proto <-> domain mapping, called directly: no server, no I/O."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar, cast

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from imagery.common.domain import ImageRecord, ImageStatus, VariantInfo
from imagery.common.errors import InvalidArgument
from imagery.common.grpc.auth import set_principal
from imagery.common.grpc.images import image_to_proto
from imagery.common.ids import new_image_id
from imagery.common.tenancy import Principal
from imagery.delivery.grpc_api import mapping
from imagery.delivery.grpc_api.servicer import DeliveryServiceServicer, DeliveryUseCases
from imagery.delivery.urls import (
    BatchGetDownloadUrls,
    BatchResult,
    DownloadUrl,
    GetDownloadUrl,
    UrlFailure,
)
from imagery.delivery.use_cases import BatchGetImages, GetImage, ImagePage, ImagesResult, ListImages
from imagery.delivery.watch import WatchImage
from imagery.upload.grpc_api.mapping import ticket_to_proto
from imagery.upload.grpc_api.servicer import UploadServiceServicer
from imagery.upload.use_cases import (
    CreateUploadUrl,
    DeleteImage,
    UpdateImage,
    UploadRequest,
    UploadTicket,
)
from imagery.v1 import delivery_service_pb2 as dpb
from imagery.v1 import errors_pb2, image_pb2
from imagery.v1 import upload_service_pb2 as upb
from tests.principals import CALLER

T = TypeVar("T")
set_principal(CALLER)  # what the interceptor does before a servicer runs; tasks copy it
CREATED = datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)
EXPIRES = CREATED + timedelta(minutes=10)
HEADERS = {"Content-Type": "image/png", "x-amz-checksum-sha256": "abc"}
TICKET = UploadTicket(new_image_id(), "https://s3/uploads/x?Sig=s", "PUT", HEADERS, EXPIRES, 1234)
VARIANTS = (
    VariantInfo("small", "webp", "image/webp", 320, 240, 900, "variants/a/small.webp"),
    VariantInfo("small", "jpeg", "image/jpeg", 320, 213, 1100, "variants/a/small.jpg"),
)
READY = ImageRecord(
    new_image_id(),
    ImageStatus.READY,
    "image/png",
    "cat.png",
    "uploads/x",
    size_bytes=5000,
    width=640,
    height=480,
    sha256="ab" * 32,
    detected_format="png",
    created_at=CREATED,
    updated_at=CREATED + timedelta(seconds=3),
    variants=VARIANTS,
)
URL = DownloadUrl(new_image_id(), "small", "https://cdn/s?Signature=s", EXPIRES, "image/webp")
NOT_FOUND = new_image_id()
PREFERENCES = [
    (image_pb2.VARIANT_FORMAT_UNSPECIFIED, "webp"),
    (image_pb2.VARIANT_FORMAT_WEBP, "webp"),
    (image_pb2.VARIANT_FORMAT_FALLBACK, "fallback"),
    (image_pb2.VARIANT_FORMAT_AVIF, "avif"),
]


class FakeUseCase(Generic[T]):
    """Returns a fixed value and records the keyword arguments of every call."""

    def __init__(self, result: T) -> None:
        self.result = result
        self.calls: list[dict[str, object]] = []

    async def __call__(self, caller: Principal, *args: object, **kwargs: object) -> T:
        assert caller is CALLER, "the servicer passes the authenticated caller"
        self.calls.append({"args": args, **kwargs} if args else kwargs)
        return self.result


class FakeWatch:
    """Yields fixed states and records the keyword arguments of every call."""

    def __init__(self, states: list[ImageRecord]) -> None:
        self.states = states
        self.calls: list[dict[str, object]] = []

    async def __call__(
        self, caller: Principal, **kwargs: object
    ) -> AsyncGenerator[ImageRecord, None]:
        assert caller is CALLER, "the servicer passes the authenticated caller"
        self.calls.append(kwargs)
        for state in self.states:
            yield state


class Delivery:
    """The real servicer over fakes."""

    def __init__(self) -> None:
        self.get_image = FakeUseCase(READY)
        self.get_url = FakeUseCase(URL)
        self.batch = FakeUseCase(
            BatchResult([URL], [NOT_FOUND], [UrlFailure(NOT_FOUND, "thumb", "IMAGE_NOT_FOUND")])
        )
        self.batch_get_images = FakeUseCase(ImagesResult([READY], [NOT_FOUND]))
        self.list_images = FakeUseCase(ImagePage([READY], "next"))
        self.watch = FakeWatch([replace(READY, status=ImageStatus.PROCESSING), READY])
        self.servicer = DeliveryServiceServicer(
            DeliveryUseCases(
                get_image=cast(GetImage, self.get_image),
                get_url=cast(GetDownloadUrl, self.get_url),
                batch=cast(BatchGetDownloadUrls, self.batch),
                batch_get_images=cast(BatchGetImages, self.batch_get_images),
                list_images=cast(ListImages, self.list_images),
                watch=cast(WatchImage, self.watch),
            )
        )


def _at(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


# An async test first: looptime leaks an event loop when a sync test opens the session.
async def test_upload_servicer_passes_request_fields_and_maps_the_ticket() -> None:
    create, delete = FakeUseCase(TICKET), FakeUseCase(True)
    servicer = UploadServiceServicer(
        cast(CreateUploadUrl, create), cast(DeleteImage, delete), cast(UpdateImage, None)
    )
    request = upb.CreateUploadUrlRequest(content_type="image/png", file_name="cat.png")
    response = await servicer.CreateUploadUrl(request, None)  # type: ignore[arg-type]
    assert create.calls == [{"args": (UploadRequest("image/png", "cat.png"),)}]
    declared = upb.CreateUploadUrlRequest(
        content_type="image/png",
        file_name="cat.png",
        size_bytes=0,
        sha256="ab" * 32,
        upload_method="PUT",
    )
    await servicer.CreateUploadUrl(declared, None)  # type: ignore[arg-type]
    assert create.calls[1] == {
        "args": (UploadRequest("image/png", "cat.png", 0, "ab" * 32, "PUT"),)
    }, "a declared size of 0 is a declaration (refused by the use case), not an absent one"
    assert response == ticket_to_proto(TICKET) and response.image_id == TICKET.image_id
    delete_request = upb.DeleteImageRequest(image_id=TICKET.image_id)
    deleted = await servicer.DeleteImage(delete_request, None)  # type: ignore[arg-type]
    assert delete.calls == [{"image_id": TICKET.image_id}] and deleted.deleted is True


def test_ticket_to_proto_carries_every_field() -> None:
    proto = ticket_to_proto(TICKET)
    assert proto.image_id == TICKET.image_id and proto.upload_url == TICKET.upload_url
    assert proto.upload_method == "PUT" and proto.max_size_bytes == 1234
    assert dict(proto.required_headers) == HEADERS
    assert proto.HasField("expire_time") and _at(proto.expire_time) == EXPIRES
    post = ticket_to_proto(replace(TICKET, method="POST", form_fields={"key": "uploads/x"}))
    assert post.upload_method == "POST" and dict(post.form_fields) == {"key": "uploads/x"}


@pytest.mark.parametrize("status", list(ImageStatus))
def test_every_status_maps_to_its_proto_enum(status: ImageStatus) -> None:
    image = image_to_proto(replace(READY, status=status))
    assert image_pb2.ImageStatus.Name(image.status) == f"IMAGE_STATUS_{status.name}"


def test_a_ready_record_maps_every_field() -> None:
    image = image_to_proto(READY)
    assert (image.image_id, image.file_name, image.detected_format) == (READY.id, "cat.png", "png")
    assert image.content_type == "image/png"
    assert image.status == image_pb2.IMAGE_STATUS_READY and image.sha256 == "ab" * 32
    assert (image.width, image.height) == (640, 480)
    assert image.HasField("size_bytes") and image.size_bytes == 5000
    assert _at(image.create_time) == CREATED
    assert _at(image.update_time) == CREATED + timedelta(seconds=3)
    variants = [
        (v.name, v.format, v.content_type, v.width, v.height, v.size_bytes) for v in image.variants
    ]
    assert variants == [
        ("small", "webp", "image/webp", 320, 240, 900),
        ("small", "jpeg", "image/jpeg", 320, 213, 1100),
    ]


def test_a_failed_record_carries_its_reason_and_no_variants() -> None:
    failed = replace(READY, status=ImageStatus.FAILED, failure_reason="not an image")
    image = image_to_proto(failed)
    assert image.failure_reason == "not an image" and list(image.variants) == []


def test_a_pending_record_without_optional_fields_maps_to_empty_fields() -> None:
    record = ImageRecord(new_image_id(), ImageStatus.PENDING, "image/gif", "a.gif", "uploads/x")
    image = image_to_proto(record)
    assert image.status == image_pb2.IMAGE_STATUS_PENDING and image.image_id == record.id
    assert (image.width, image.height, image.sha256) == (0, 0, "")
    assert (image.failure_reason, image.detected_format) == ("", "")
    assert not image.HasField("size_bytes")
    assert not image.HasField("create_time") and not image.HasField("update_time")
    assert list(image.variants) == []


def test_batch_response_keeps_order_not_found_and_each_expiry() -> None:
    later = EXPIRES + timedelta(minutes=5)
    a, b, c = (new_image_id() for _ in range(3))
    urls = [
        DownloadUrl(c, "small", "https://cdn/c", EXPIRES, "image/webp"),
        DownloadUrl(a, "small", "https://cdn/a", later, "image/jpeg"),
        DownloadUrl(b, "small", "https://cdn/b", EXPIRES, "image/avif"),
    ]
    response = mapping.batch_response(BatchResult(urls, [NOT_FOUND]))
    mapped = [
        DownloadUrl(u.image_id, u.variant, u.url, _at(u.expire_time), u.content_type)
        for u in response.download_urls
    ]
    assert mapped == urls and list(response.not_found_image_ids) == [NOT_FOUND]
    response.download_urls[0].expire_time.seconds += 1  # each item holds its own copy
    assert _at(response.download_urls[2].expire_time) == EXPIRES


async def test_get_image_passes_the_id_and_maps_the_record() -> None:
    delivery = Delivery()
    request = dpb.GetImageRequest(image_id=READY.id)
    response = await delivery.servicer.GetImage(request, None)  # type: ignore[arg-type]
    assert delivery.get_image.calls == [{"image_id": READY.id}]
    assert response.image == image_to_proto(READY) and response.image.image_id == READY.id


async def test_watch_image_passes_the_id_and_maps_each_state() -> None:
    delivery = Delivery()
    request = dpb.WatchImageRequest(image_id=READY.id)
    responses = [r async for r in delivery.servicer.WatchImage(request, None)]  # type: ignore[arg-type]
    assert delivery.watch.calls == [{"image_id": READY.id}]
    assert [r.image for r in responses] == [image_to_proto(s) for s in delivery.watch.states]
    assert [r.image.status for r in responses] == [
        image_pb2.IMAGE_STATUS_PROCESSING,
        image_pb2.IMAGE_STATUS_READY,
    ]


@pytest.mark.parametrize(("proto_format", "preference"), PREFERENCES)
async def test_get_download_url_maps_the_format_to_a_preference(
    proto_format: image_pb2.VariantFormat.ValueType, preference: str
) -> None:
    delivery = Delivery()
    request = dpb.GetDownloadUrlRequest(image_id=URL.image_id, variant="small", format=proto_format)
    response = await delivery.servicer.GetDownloadUrl(request, None)  # type: ignore[arg-type]
    assert delivery.get_url.calls == [
        {"image_id": URL.image_id, "variant": "small", "preference": preference}
    ]
    mapped = (response.image_id, response.variant, response.url, response.content_type)
    assert mapped == (URL.image_id, "small", URL.url, "image/webp")
    assert _at(response.expire_time) == EXPIRES


@pytest.mark.parametrize(("proto_format", "preference"), PREFERENCES)
async def test_batch_passes_ids_in_order_and_maps_the_result(
    proto_format: image_pb2.VariantFormat.ValueType, preference: str
) -> None:
    delivery = Delivery()
    ids = [NOT_FOUND, URL.image_id]
    request = dpb.BatchGetDownloadUrlsRequest(image_ids=ids, variant="thumb", format=proto_format)
    response = await delivery.servicer.BatchGetDownloadUrls(request, None)  # type: ignore[arg-type]
    assert delivery.batch.calls == [
        {"image_ids": ids, "variant": "thumb", "variants": [], "preference": preference}
    ]
    assert [(u.image_id, u.url, _at(u.expire_time)) for u in response.download_urls] == [
        (URL.image_id, URL.url, EXPIRES)
    ]
    assert list(response.not_found_image_ids) == [NOT_FOUND]
    assert [(f.image_id, f.variant, f.reason) for f in response.failures] == [
        (NOT_FOUND, "thumb", errors_pb2.ERROR_REASON_IMAGE_NOT_FOUND)
    ]


async def test_batch_passes_several_variants() -> None:
    delivery = Delivery()
    request = dpb.BatchGetDownloadUrlsRequest(image_ids=[URL.image_id], variants=["a", "b"])
    await delivery.servicer.BatchGetDownloadUrls(request, None)  # type: ignore[arg-type]
    assert delivery.batch.calls[0]["variants"] == ["a", "b"]
    assert delivery.batch.calls[0]["variant"] == ""


async def test_an_unknown_format_is_refused_not_served_as_webp() -> None:
    delivery = Delivery()
    unknown = cast(image_pb2.VariantFormat.ValueType, 9)
    with pytest.raises(InvalidArgument) as refused:
        await delivery.servicer.GetDownloadUrl(
            dpb.GetDownloadUrlRequest(image_id=URL.image_id, variant="small", format=unknown),
            None,  # type: ignore[arg-type]
        )
    assert refused.value.violations[0].field == "format"
    with pytest.raises(InvalidArgument):
        await delivery.servicer.BatchGetDownloadUrls(
            dpb.BatchGetDownloadUrlsRequest(image_ids=[URL.image_id], variant="s", format=unknown),
            None,  # type: ignore[arg-type]
        )
    assert delivery.get_url.calls == [] and delivery.batch.calls == []


async def test_batch_get_images_maps_images_and_missing_ids() -> None:
    delivery = Delivery()
    request = dpb.BatchGetImagesRequest(image_ids=[READY.id, NOT_FOUND])
    response = await delivery.servicer.BatchGetImages(request, None)  # type: ignore[arg-type]
    assert delivery.batch_get_images.calls == [{"image_ids": [READY.id, NOT_FOUND]}]
    assert list(response.images) == [image_to_proto(READY)]
    assert list(response.not_found_image_ids) == [NOT_FOUND]


async def test_list_images_passes_paging_and_filter() -> None:
    delivery = Delivery()
    request = dpb.ListImagesRequest(page_size=5, page_token="t", filter="status = READY")
    response = await delivery.servicer.ListImages(request, None)  # type: ignore[arg-type]
    assert delivery.list_images.calls == [
        {"page_size": 5, "page_token": "t", "filter": "status = READY"}
    ]
    assert list(response.images) == [image_to_proto(READY)]
    assert response.next_page_token == "next"


def test_labels_map_to_the_image() -> None:
    image = image_to_proto(replace(READY, labels={"team": "feed", "env": "prod"}))
    assert dict(image.labels) == {"team": "feed", "env": "prod"}
