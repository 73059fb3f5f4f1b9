"""imagery-client without I/O: the default service config covers every UploadService and
DeliveryService RPC as the issue asks, credentials are checked before a channel is made, the
channels take a full ListImages page and give every CreateUploadUrl a request id, and the
requests the client builds (declared uploads, request ids, batches of 50) are right."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from imagery.client import DEFAULT_SERVICE_CONFIG, AioRequestId, SyncRequestId, _upload, results
from imagery.client.channels import CREATE_UPLOAD_URL, MAX_RECEIVE_MESSAGE_BYTES, ChannelSettings
from imagery.common.errors import FailureReason, InvalidArgument
from imagery.common.formats import ALLOWED_CONTENT_TYPES, FORMATS
from imagery.common.presets import DEFAULT_PRESETS
from imagery.delivery.use_cases import MAX_PAGE_SIZE
from imagery.upload.validation import MAX_FILE_NAME_CHARS, MAX_LABELS, validate_labels
from imagery.v1 import delivery_service_pb2, errors_pb2, image_pb2, upload_service_pb2

SERVICES = {
    "imagery.v1.UploadService": upload_service_pb2.DESCRIPTOR.services_by_name["UploadService"],
    "imagery.v1.DeliveryService": delivery_service_pb2.DESCRIPTOR.services_by_name[
        "DeliveryService"
    ],
}


def _configs() -> dict[tuple[str, str], dict[str, object]]:
    found: dict[tuple[str, str], dict[str, object]] = {}
    for entry in DEFAULT_SERVICE_CONFIG["methodConfig"]:
        for name in entry["name"]:
            key = (name["service"], name["method"])
            assert key not in found, f"{key} is configured twice"
            found[key] = entry
    return found


def test_every_image_rpc_retries_unavailable_with_backoff_and_round_robin() -> None:
    assert DEFAULT_SERVICE_CONFIG["loadBalancingConfig"] == [{"round_robin": {}}]
    configs = _configs()
    rpcs = {(full, m.name) for full, s in SERVICES.items() for m in s.methods}
    assert set(configs) == rpcs, "every RPC of both services has a method config"
    for (_, method), entry in configs.items():
        policy = entry["retryPolicy"]
        assert isinstance(policy, dict)
        assert policy["retryableStatusCodes"] == ["UNAVAILABLE"], method
        assert 2 <= policy["maxAttempts"] <= 5  # gRPC caps attempts at 5
        assert float(policy["initialBackoff"].rstrip("s")) > 0
        assert policy["backoffMultiplier"] > 1
        if method == "WatchImage":
            assert "timeout" not in entry, "a watch lasts as long as its caller wants"
        else:
            assert float(str(entry["timeout"]).rstrip("s")) <= 30, method
    assert DEFAULT_SERVICE_CONFIG["retryThrottling"]["tokenRatio"] > 0


def test_channel_options_enable_retries_with_the_config() -> None:
    options = dict(ChannelSettings(api_key="k", insecure=True).channel_options())
    assert options["grpc.enable_retries"] == 1
    assert '"round_robin"' in options["grpc.service_config"]
    assert options["grpc.max_receive_message_length"] == MAX_RECEIVE_MESSAGE_BYTES
    mine = [("grpc.x", 1), ("grpc.max_receive_message_length", 1 << 20)]
    own = ChannelSettings(service_config={}, options=mine).channel_options()
    assert len(own) == len({name for name, _ in own}), "each argument once: yours win"
    assert dict(own)["grpc.service_config"] == "{}" and dict(own)["grpc.x"] == 1
    assert dict(own)["grpc.max_receive_message_length"] == 1 << 20


def _longest(accepted: Callable[[int], bool]) -> int:
    return max(n for n in range(1, 1000) if accepted(n))


def _labels_accept(key: int, value: int) -> bool:
    try:
        validate_labels({"k" * key: "v" * value})
    except InvalidArgument:
        return False
    return True


def test_a_full_list_images_page_of_the_largest_images_fits_the_receive_limit() -> None:
    key, value = _longest(lambda n: _labels_accept(n, 0)), _longest(lambda n: _labels_accept(1, n))
    labels = {f"{i:03d}".rjust(key, "k"): "v" * value for i in range(MAX_LABELS)}
    assert validate_labels(labels) == labels, "as many labels as imagery takes, each its longest"
    most = (1 << 31) - 1
    image = image_pb2.Image(
        image_id="0" * 26,
        status=image_pb2.IMAGE_STATUS_FAILED,
        content_type=max(ALLOWED_CONTENT_TYPES, key=len),
        file_name="\U0001f5bc" * MAX_FILE_NAME_CHARS,  # 4 bytes each in UTF-8
        size_bytes=(1 << 63) - 1,
        width=most,
        height=most,
        sha256="f" * 64,
        failure_reason=max(FailureReason, key=len),
        detected_format=max(FORMATS, key=len),
        labels=labels,
    )
    for stamp in (image.create_time, image.update_time):
        stamp.FromJsonString("9999-12-31T23:59:59.999999Z")
    for preset in DEFAULT_PRESETS:
        for encoding in (f for f in FORMATS.values() if f.variant):
            image.variants.add(
                name=preset.name,
                format=encoding.name,
                content_type=encoding.content_type,
                width=most,
                height=most,
                size_bytes=(1 << 63) - 1,
            )
    page = delivery_service_pb2.ListImagesResponse(
        images=[image] * MAX_PAGE_SIZE, next_page_token="t" * 1000
    )
    assert page.ByteSize() > 4 * 1024 * 1024, "gRPC's default limit would refuse it"
    assert page.ByteSize() * 2 <= MAX_RECEIVE_MESSAGE_BYTES, "room for more presets"


def test_create_upload_url_without_a_request_id_gets_a_fresh_one_per_call() -> None:
    sent: list[Any] = []

    def continuation(details: Any, request: Any) -> str:
        sent.append(request)
        return "answer"

    create = SimpleNamespace(method=CREATE_UPLOAD_URL)
    request = upload_service_pb2.CreateUploadUrlRequest(content_type="image/png", file_name="a")
    interceptor = SyncRequestId()
    assert interceptor.intercept_unary_unary(continuation, create, request) == "answer"
    interceptor.intercept_unary_unary(continuation, create, request)
    first, second = sent
    assert uuid.UUID(first.request_id).version == 4 and first.request_id != second.request_id
    assert (first.content_type, first.file_name) == ("image/png", "a")
    assert request.request_id == "", "the caller's message is left as it was"

    mine = upload_service_pb2.CreateUploadUrlRequest(request_id="mine-1")
    interceptor.intercept_unary_unary(continuation, create, mine)
    delete = upload_service_pb2.DeleteImageRequest(image_id="x")
    other = SimpleNamespace(method="/imagery.v1.UploadService/DeleteImage")
    interceptor.intercept_unary_unary(continuation, other, delete)
    assert sent[2] is mine and sent[3] is delete, "passed on as they are"


async def test_the_aio_interceptor_fills_the_request_id_too() -> None:
    sent: list[Any] = []

    async def continuation(details: Any, request: Any) -> str:
        sent.append(request)
        return "answer"

    create = SimpleNamespace(method=CREATE_UPLOAD_URL.encode())  # grpc.aio passes bytes
    request = upload_service_pb2.CreateUploadUrlRequest(content_type="image/png")
    assert await AioRequestId().intercept_unary_unary(continuation, create, request) == "answer"
    assert uuid.UUID(sent[0].request_id) and not request.request_id


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"insecure": True, "root_certificates": b"pem"}, "insecure=True"),
        ({"private_key": b"key"}, "both private_key and certificate_chain"),
        ({"api_key": "  "}, "api_key is empty"),
    ],
)
def test_contradictory_credentials_are_refused_at_once(
    settings: dict[str, object], problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        ChannelSettings(**settings)  # type: ignore[arg-type]


def test_the_key_travels_as_metadata_only_on_plaintext_channels() -> None:
    assert ChannelSettings(api_key=" k ", insecure=True).plaintext_metadata() == (
        "authorization",
        "Bearer k",
    )
    assert ChannelSettings(api_key="k").plaintext_metadata() is None  # call credentials


def test_an_upload_declares_its_size_and_checksum_and_carries_a_fresh_request_id(
    tmp_path: Path,
) -> None:
    body = b"\x89PNG not really" * 1000
    payload = _upload.prepare(body, None)
    assert (payload.size, payload.sha256) == (len(body), hashlib.sha256(body).hexdigest())
    first = _upload.create_request(
        payload, "image/png", labels={"a": "b"}, request_id=None, declare=True
    )
    second = _upload.create_request(
        payload, "image/png", labels=None, request_id=None, declare=True
    )
    assert first.size_bytes == len(body) and first.sha256 == payload.sha256
    assert first.file_name == "upload" and dict(first.labels) == {"a": "b"}
    assert uuid.UUID(first.request_id) and first.request_id != second.request_id
    undeclared = _upload.create_request(
        payload, "image/png", labels=None, request_id="mine-1", declare=False
    )
    assert not undeclared.HasField("size_bytes") and not undeclared.sha256
    assert undeclared.request_id == "mine-1"

    path = tmp_path / "cat.png"
    path.write_bytes(body * 3)
    from_file = _upload.prepare(path, None)
    assert from_file.body is None and from_file.file_name == "cat.png"
    assert from_file.sha256 == hashlib.sha256(body * 3).hexdigest()
    assert _upload.prepare(str(path), "other.png").file_name == "other.png"
    with pytest.raises(TypeError):
        _upload.prepare(12, None)  # type: ignore[arg-type]


def test_download_urls_are_asked_fifty_distinct_ids_at_a_time() -> None:
    ids = [f"01M8V3JB6V38XGKQHBEKP{i:05d}" for i in range(120)]
    requests = results.download_requests(ids + ids[:10], ["small", "thumbnail"], "fallback")
    assert [len(r.image_ids) for r in requests] == [50, 50, 20]
    assert [i for r in requests for i in r.image_ids] == ids
    assert requests[0].variant == "small" and list(requests[0].variants) == ["small", "thumbnail"]
    assert requests[0].format == image_pb2.VARIANT_FORMAT_FALLBACK
    (one,) = results.download_requests([ids[0]], "small", None)
    assert list(one.variants) == ["small"] and one.format == image_pb2.VARIANT_FORMAT_UNSPECIFIED
    (empty,) = results.download_requests([], "small", None)  # the server says NO_IMAGE_IDS
    assert list(empty.image_ids) == []
    with pytest.raises(TypeError):
        results.download_requests(ids[0], "small", None)
    assert [len(r.image_ids) for r in results.image_requests(ids)] == [100, 20]


def test_batch_answers_fold_into_urls_by_image_and_variant_with_failures() -> None:
    answer = delivery_service_pb2.BatchGetDownloadUrlsResponse(
        download_urls=[
            delivery_service_pb2.DownloadUrl(image_id="a", variant="small", url="u1"),
            delivery_service_pb2.DownloadUrl(image_id="a", variant="thumbnail", url="u2"),
        ],
        failures=[
            delivery_service_pb2.DownloadUrlFailure(
                image_id="b", variant="small", reason=errors_pb2.ERROR_REASON_IMAGE_NOT_READY
            ),
            delivery_service_pb2.DownloadUrlFailure(
                image_id="b", variant="x", reason=cast("errors_pb2.ErrorReason.ValueType", 999)
            ),
        ],
    )
    urls = results.fold_download_urls([answer])
    assert dict(urls["a"]) == {"small": "u1", "thumbnail": "u2"} and list(urls) == ["a"]
    assert urls.failures == (
        results.DownloadFailure("b", "small", "IMAGE_NOT_READY"),
        results.DownloadFailure("b", "x", "999"),  # a reason newer than this client
    )
