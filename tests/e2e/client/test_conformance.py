"""One scenario suite, run with imagery-client against its in-process fake and against the
real services (upload, delivery, processor and the CloudFront stand-in): whatever a user of
the client can observe must be the same, so that teams testing against the fake test what
they will meet."""

from __future__ import annotations

import hashlib
import re
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from imagery.client import AsyncImageryClient, ImageryClient, UploadLimits, _upload, errors
from imagery.client.results import DownloadFailure
from imagery.client.testing import FakeImageryServer
from imagery.v1 import delivery_service_pb2 as dpb
from imagery.v1 import image_pb2
from imagery.v1 import upload_service_pb2 as upb
from tests import images
from tests.e2e.client.conftest import Stack

pytestmark = pytest.mark.e2e

READY, FAILED = image_pb2.IMAGE_STATUS_READY, image_pb2.IMAGE_STATUS_FAILED
UNKNOWN_ID = "01M8V3JB6V38XGKQHBEKP3VZFZ"
WAIT = 60.0


@dataclass(frozen=True)
class Backend:
    name: str
    upload_address: str
    delivery_address: str
    api_key: str

    def client(self, **overrides: Any) -> ImageryClient:
        args = {"api_key": self.api_key, "insecure": True, **overrides}
        return ImageryClient(self.upload_address, self.delivery_address, **args)

    def async_client(self) -> AsyncImageryClient:
        return AsyncImageryClient(
            self.upload_address, self.delivery_address, api_key=self.api_key, insecure=True
        )


@pytest.fixture(params=["fake", "real"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "fake":
        with FakeImageryServer() as fake:
            yield Backend("fake", fake.address, fake.address, fake.api_key)
    else:
        stack: Stack = request.getfixturevalue("imagery_stack")
        yield Backend("real", stack.upload_address, stack.delivery_address, stack.api_key)


@pytest.fixture
def imagery(backend: Backend) -> Iterator[ImageryClient]:
    with backend.client() as client:
        yield client


def _tag() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


def _fetch(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as answer:
        answer.read()
        return answer.status, answer.headers["Content-Type"]


def test_an_upload_becomes_ready_with_variants_and_urls_that_serve_them(
    imagery: ImageryClient,
) -> None:
    body = images.png(640, 480)
    image_id = imagery.upload(body, "image/png", file_name="cat.png")
    image = imagery.wait_ready(image_id, timeout=WAIT)
    assert image.status == READY and image.image_id == image_id
    assert (image.width, image.height, image.detected_format) == (640, 480, "png")
    assert (image.content_type, image.file_name) == ("image/png", "cat.png")
    assert image.sha256 == hashlib.sha256(body).hexdigest() and image.size_bytes == len(body)
    sizes = {(v.name, v.format): (v.width, v.height) for v in image.variants}
    assert sizes[("thumbnail", "webp")] == (150, 150)
    assert sizes[("small", "webp")] == (400, 300)
    assert sizes[("medium", "webp")] == (640, 480), "never upscaled"
    # imagery renders large and original on their first request (the fake at once)
    assert {name for name, _ in sizes} >= {"thumbnail", "small", "medium"}
    assert imagery.get_image(image_id) == image

    urls = imagery.download_urls([image_id, image_id], ["thumbnail", "small"])
    assert list(urls) == [image_id] and set(urls[image_id]) == {"thumbnail", "small"}
    assert urls.failures == ()
    assert _fetch(urls[image_id]["small"]) == (200, "image/webp")
    fallback = imagery.download_url(image_id, "small", format="fallback")
    assert fallback.split("?")[0].endswith("/small.jpg")
    assert _fetch(fallback) == (200, "image/jpeg")


def test_a_ready_image_has_a_placeholder_and_colours_in_every_read(imagery: ImageryClient) -> None:
    run = _tag()
    image_id = imagery.upload(images.png(), "image/png", labels={"run": run})
    image = imagery.wait_ready(image_id, timeout=WAIT)
    assert image.placeholder.thumbhash and len(image.placeholder.thumbhash) <= 25
    # BlurHash: the first character says the components (default 4x3: 3 + 2 * 9 = "L"), then
    # 1 of maximum AC, 4 of DC, 2 per AC component
    assert image.placeholder.blurhash[0] == "L" and len(image.placeholder.blurhash) == 28
    assert re.fullmatch("#[0-9a-f]{6}", image.average_color)
    shares = [c.fraction for c in image.dominant_colors]
    assert 1 <= len(shares) <= 5 and shares == sorted(shares, reverse=True)
    assert abs(sum(shares) - 1) < 0.01
    assert all(re.fullmatch("#[0-9a-f]{6}", c.color) for c in image.dominant_colors)
    listed = list(imagery.list_images(filter=f'labels.run = "{run}"'))
    assert listed == [image] and imagery.batch_get_images([image_id]).images == [image]


def test_labels_listing_and_batches(imagery: ImageryClient) -> None:
    run = _tag()
    first = imagery.upload(images.png(), "image/png", labels={"run": run, "kind": "a"})
    second = imagery.upload(images.png(64, 49), "image/png", labels={"run": run, "kind": "b"})
    for image_id in (first, second):
        imagery.wait_ready(image_id, timeout=WAIT)
    changed = imagery.update_labels(first, {"run": run, "kind": "c"})
    assert dict(changed.labels) == {"run": run, "kind": "c"}
    assert dict(imagery.get_image(first).labels) == {"run": run, "kind": "c"}

    listed = [i.image_id for i in imagery.list_images(filter=f'labels.run = "{run}"')]
    assert listed == [second, first], "newest first"
    paged = [i.image_id for i in imagery.list_images(filter=f"labels.run = {run}", page_size=1)]
    assert paged == [second, first]
    only_c = imagery.list_images(
        filter=f'status = READY AND labels.run = "{run}" AND labels.kind = "c"'
    )
    assert [i.image_id for i in only_c] == [first]

    batch = imagery.batch_get_images([second, UNKNOWN_ID, first, second])
    assert [i.image_id for i in batch.images] == [second, first]
    assert batch.not_found_image_ids == [UNKNOWN_ID]


def test_errors_are_the_same_typed_exceptions(backend: Backend, imagery: ImageryClient) -> None:
    with pytest.raises(errors.ImageNotFound) as unknown:
        imagery.get_image(UNKNOWN_ID)
    assert unknown.value.image_id == UNKNOWN_ID and unknown.value.code is grpc.StatusCode.NOT_FOUND
    with pytest.raises(errors.InvalidImageId):
        imagery.get_image("not-an-id")
    with pytest.raises(errors.UnsupportedContentType) as content_type:
        imagery.upload(images.png(), "image/*")
    assert [v.field for v in content_type.value.field_violations] == ["content_type"]
    with pytest.raises(errors.InvalidArgument) as labels:
        imagery.upload(images.png(), "image/png", labels={"Bad": "x"})
    assert labels.value.field_violations[0].field.startswith("labels")
    with pytest.raises(errors.UnknownVariant) as variant:
        imagery.download_urls([UNKNOWN_ID], ["no-such-variant"])
    assert "small" in variant.value.metadata["available"]
    with pytest.raises(errors.NoImageIds):
        imagery.download_urls([], "small")
    with backend.client(api_key=None) as anonymous, pytest.raises(errors.MissingCredentials):
        anonymous.get_image(UNKNOWN_ID)

    ticket: upb.CreateUploadUrlResponse = imagery.upload_stub.CreateUploadUrl(
        upb.CreateUploadUrlRequest(content_type="image/png", file_name="never.png")
    )
    pending = ticket.image_id  # its bytes never arrive
    with pytest.raises(errors.ImageNotReady) as not_ready:
        imagery.download_url(pending, "small")
    assert not_ready.value.metadata == {"image_id": pending, "status": "pending"}
    urls = imagery.download_urls([pending, UNKNOWN_ID], "small")
    assert len(urls) == 0
    assert urls.failures == (
        DownloadFailure(pending, "small", "IMAGE_NOT_READY"),
        DownloadFailure(UNKNOWN_ID, "small", "IMAGE_NOT_FOUND"),
    )


def test_bytes_that_are_no_image_end_failed(imagery: ImageryClient) -> None:
    image_id = imagery.upload(b"this is not an image at all", "image/png")
    with pytest.raises(errors.ImageFailed) as failed:
        imagery.wait_ready(image_id, timeout=WAIT)
    assert failed.value.failure_reason == "UNSUPPORTED_FORMAT"
    assert failed.value.image is not None and failed.value.image.status == FAILED
    assert imagery.get_image(image_id).failure_reason == "UNSUPPORTED_FORMAT"
    urls = imagery.download_urls([image_id], "small")
    assert urls.failures == (DownloadFailure(image_id, "small", "IMAGE_FAILED"),)
    with pytest.raises(errors.ImageNotReady) as one:  # one URL: NOT_READY, whose status says why
        imagery.download_url(image_id, "small")
    assert one.value.code is grpc.StatusCode.FAILED_PRECONDITION
    assert one.value.metadata == {"image_id": image_id, "status": "failed"}


def test_a_deleted_image_is_gone(imagery: ImageryClient) -> None:
    image_id = imagery.upload(images.png(), "image/png")
    imagery.wait_ready(image_id, timeout=WAIT)
    assert imagery.delete_image(image_id) is True
    assert imagery.delete_image(image_id) is False
    with pytest.raises(errors.ImageNotFound):
        imagery.get_image(image_id)
    with pytest.raises(errors.ImageNotFound):
        imagery.wait_ready(image_id, timeout=10)
    urls = imagery.download_urls([image_id], "small")
    assert urls.failures == (DownloadFailure(image_id, "small", "IMAGE_NOT_FOUND"),)


def test_a_retried_upload_with_its_request_id_is_the_same_image(imagery: ImageryClient) -> None:
    request_id = str(uuid.uuid4())
    body = images.png(70, 50)
    first = imagery.upload(body, "image/png", request_id=request_id)
    assert imagery.upload(body, "image/png", request_id=request_id) == first
    assert imagery.wait_ready(first, timeout=WAIT).status == READY
    with pytest.raises(errors.RequestIdReused):
        imagery.upload(images.png(71, 50), "image/png", request_id=request_id)


def test_a_retry_with_the_request_id_answers_the_same_image_and_the_first_url_still_works(
    imagery: ImageryClient,
) -> None:
    body = images.png(72, 50)
    payload = _upload.prepare(body, "retried.png")
    request = _upload.create_request(
        payload, "image/png", labels=None, request_id=str(uuid.uuid4()), declare=True
    )
    first: upb.CreateUploadUrlResponse = imagery.upload_stub.CreateUploadUrl(request)
    retry: upb.CreateUploadUrlResponse = imagery.upload_stub.CreateUploadUrl(request)
    assert retry.image_id == first.image_id
    assert dict(retry.required_headers) == dict(first.required_headers)
    _upload.put(first, payload, "image/png", timeout=10)  # the answer the caller may have lost
    assert imagery.wait_ready(first.image_id, timeout=WAIT).sha256 == payload.sha256

    assert imagery.delete_image(first.image_id) is True
    with pytest.raises(grpc.RpcError) as caught:
        imagery.upload_stub.CreateUploadUrl(request)
    deleted = errors.from_rpc_error(caught.value)
    assert isinstance(deleted, errors.ImageNotFound)
    assert deleted.metadata == {"image_id": first.image_id, "request_id": request.request_id}


def test_filters_combine_with_or_not_and_parentheses(imagery: ImageryClient) -> None:
    run = _tag()
    a = imagery.upload(images.png(), "image/png", labels={"run": run, "kind": "a"})
    b = imagery.upload(images.png(), "image/png", labels={"run": run, "kind": "b"})
    bare = imagery.upload(images.png(), "image/png", labels={"run": run})
    for image_id in (a, b, bare):
        imagery.wait_ready(image_id, timeout=WAIT)

    def listed(condition: str) -> list[str]:
        return [i.image_id for i in imagery.list_images(filter=f"labels.run = {run} {condition}")]

    assert listed("AND (labels.kind = a OR labels.kind = b)") == [b, a]
    assert listed("(labels.kind = a OR -labels:kind)") == [bare, a]
    assert listed("AND labels.kind != a") == [bare, b], "!= matches an image without the label"
    # NOT is two-valued, as != is: an image without the label is listed
    assert listed("AND NOT labels.kind = a") == [bare, b]
    assert listed("AND NOT (labels.kind = a OR status = FAILED)") == [bare, b]
    assert listed('AND ("status" = READY OR status = FAILED) labels:kind') == [b, a]
    for refused in ("AND (labels:kind", "AND labels.kind < a", "OR", "AND NOT NOT labels:kind"):
        with pytest.raises(errors.InvalidArgument) as invalid:
            listed(refused)
        assert [v.field for v in invalid.value.field_violations] == ["filter"], refused


def test_create_time_filters_need_a_time_zone(imagery: ImageryClient) -> None:
    run = _tag()
    first = imagery.upload(images.png(), "image/png", labels={"run": run})
    second = imagery.upload(images.png(), "image/png", labels={"run": run})
    created = imagery.get_image(first).create_time.ToJsonString()

    def listed(condition: str) -> list[str]:
        text = f'labels.run = {run} AND create_time {condition} "{created}"'
        return [i.image_id for i in imagery.list_images(filter=text)]

    assert listed("=") == [first]
    assert listed(">") == [second]
    assert listed(">=") == [second, first]
    assert listed("<") == []
    naive = created.removesuffix("Z")  # the same instant without its zone
    for text in (f'create_time > "{naive}"', 'create_time > "2026-01-01"'):
        with pytest.raises(errors.InvalidArgument) as refused:
            list(imagery.list_images(filter=text))
        assert "no time zone" in refused.value.message, text
        assert [v.field for v in refused.value.field_violations] == ["filter"]


def test_watch_image_streams_each_state_until_terminal(imagery: ImageryClient) -> None:
    image_id = imagery.upload(images.png(), "image/png")
    request = dpb.WatchImageRequest(image_id=image_id)
    states = [m.image.status for m in imagery.delivery_stub.WatchImage(request, timeout=WAIT)]
    assert states and states[-1] == READY, "the stream ends OK once the image is READY"
    assert states == sorted(states) and len(set(states)) == len(states), states
    again = [m.image.status for m in imagery.delivery_stub.WatchImage(request, timeout=WAIT)]
    assert again == [READY], "a terminal image: its state, then the end"
    unknown = dpb.WatchImageRequest(image_id=UNKNOWN_ID)
    with pytest.raises(grpc.RpcError) as caught:
        list(imagery.delivery_stub.WatchImage(unknown, timeout=WAIT))
    assert isinstance(errors.from_rpc_error(caught.value), errors.ImageNotFound)


async def test_the_async_client_does_the_same(backend: Backend) -> None:
    run = _tag()
    async with backend.async_client() as imagery:
        image_id = await imagery.upload(images.jpeg(320, 240), "image/jpeg", labels={"run": run})
        image = await imagery.wait_ready(image_id, timeout=WAIT)
        assert (image.width, image.height, image.detected_format) == (320, 240, "jpeg")
        urls = await imagery.download_urls([image_id], "thumbnail")
        assert set(urls[image_id]) == {"thumbnail"}
        listed = [i.image_id async for i in imagery.list_images(filter=f'labels.run = "{run}"')]
        assert listed == [image_id]
        with pytest.raises(errors.ImageNotFound):
            await imagery.get_image(UNKNOWN_ID)
        assert await imagery.delete_image(image_id) is True


def test_an_upload_outside_its_own_limits_ends_failed(imagery: ImageryClient) -> None:
    body = images.png(64, 48)
    narrow = imagery.upload(body, "image/png", limits=UploadLimits(max_width=32))
    with pytest.raises(errors.ImageFailed) as failed:
        imagery.wait_ready(narrow, timeout=WAIT)
    assert failed.value.failure_reason == "DIMENSIONS_EXCEEDED"
    exact = UploadLimits(max_width=64, max_height=48, max_pixels=64 * 48)
    assert imagery.wait_ready(imagery.upload(body, "image/png", limits=exact), WAIT).width == 64

    animated = images.gif(frames=3)
    still_only = imagery.upload(animated, "image/gif", limits=UploadLimits(allow_animation=False))
    with pytest.raises(errors.ImageFailed) as refused:
        imagery.wait_ready(still_only, timeout=WAIT)
    assert refused.value.failure_reason == "DIMENSIONS_EXCEEDED"
    three = imagery.upload(animated, "image/gif", limits=UploadLimits(max_frames=3))
    assert imagery.wait_ready(three, timeout=WAIT).status == READY
    two = imagery.upload(animated, "image/gif", limits=UploadLimits(max_frames=2))
    with pytest.raises(errors.ImageFailed):
        imagery.wait_ready(two, timeout=WAIT)


def test_limits_looser_than_the_projects_are_refused(imagery: ImageryClient) -> None:
    for limits, field in (
        (UploadLimits(max_width=10_001), "limits.max_width"),
        (UploadLimits(max_frames=101), "limits.max_frames"),
        (UploadLimits(max_frames=2, allow_animation=False), "limits.max_frames"),
    ):
        with pytest.raises(errors.InvalidArgument) as caught:
            imagery.upload(images.png(), "image/png", limits=limits)
        assert caught.value.reason == "INVALID_ARGUMENT"
        assert [v.field for v in caught.value.field_violations] == [field]
    with pytest.raises(errors.InvalidArgument) as wide:
        imagery.upload(images.png(), "image/png", limits=UploadLimits(max_pixels=40_000_001))
    assert "the project's max_pixels of 40000000" in wide.value.field_violations[0].description

    request_id = str(uuid.uuid4())
    first = imagery.upload(
        images.png(), "image/png", request_id=request_id, limits=UploadLimits(max_width=64)
    )
    again = imagery.upload(
        images.png(), "image/png", request_id=request_id, limits=UploadLimits(max_width=64)
    )
    assert again == first
    with pytest.raises(errors.RequestIdReused):
        imagery.upload(
            images.png(), "image/png", request_id=request_id, limits=UploadLimits(max_width=63)
        )
