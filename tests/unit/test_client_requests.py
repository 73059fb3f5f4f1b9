"""imagery-client without I/O: the default service config covers every UploadService and
DeliveryService RPC as the issue asks, credentials are checked before a channel is made, and
the requests the client builds (declared uploads, request ids, batches of 50) are right."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import cast

import pytest

from imagery.client import DEFAULT_SERVICE_CONFIG, _upload, results
from imagery.client.channels import ChannelSettings
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
    own = dict(ChannelSettings(service_config={}, options=[("grpc.x", 1)]).channel_options())
    assert own["grpc.service_config"] == "{}" and own["grpc.x"] == 1


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
