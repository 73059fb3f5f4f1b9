"""DeliveryService as a client sees it: a real delivery process, real Postgres, the local
CloudFront stand-in serving from the local S3."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from imagery.devstack.aws import AwsResources
from imagery.devstack.fixtures import allow_connections, seed_ready_images, seed_record
from imagery.devstack.services import ServiceProcess
from imagery.v1 import delivery_service_pb2 as pb
from imagery.v1 import delivery_service_pb2_grpc as pb_grpc
from imagery.v1 import image_pb2
from tests import grpc_auth

pytestmark = pytest.mark.e2e


def _reason(err: grpc.aio.AioRpcError) -> tuple[str, dict[str, str]]:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return info.reason, dict(info.metadata)


async def _call(service: ServiceProcess, key: str, method: str, request: Any) -> Any:
    """`method` called with `key` (an API key of the `default` project, where images are seeded)."""
    async with grpc_auth.channel(f"127.0.0.1:{service.port}", key) as channel:
        return await getattr(pb_grpc.DeliveryServiceStub(channel), method)(request)


async def _refused(
    service: ServiceProcess, key: str, method: str, request: Any
) -> grpc.aio.AioRpcError:
    """The error a call fails with (the test fails if it succeeds)."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _call(service, key, method, request)
    return caught.value


@pytest.mark.parametrize("cdn_env", ["rsa", "ecdsa"], indirect=True)
async def test_a_ready_images_url_is_served_by_the_edge(
    delivery_service: ServiceProcess,
    edge: str,
    database_url: str,
    aws: AwsResources,
    api_key: str,
) -> None:
    (image_id,) = await seed_ready_images(database_url, aws, 1)
    image = (
        await _call(delivery_service, api_key, "GetImage", pb.GetImageRequest(image_id=image_id))
    ).image
    assert image.status == image_pb2.IMAGE_STATUS_READY
    assert {v.name for v in image.variants} == {"thumbnail", "small", "medium", "large", "original"}

    answer = await _call(
        delivery_service,
        api_key,
        "GetDownloadUrl",
        pb.GetDownloadUrlRequest(image_id=image_id, variant="small"),
    )
    assert answer.url.startswith(f"{edge}/variants/{image.sha256}/small.webp?Expires=")
    assert "Hash-Algorithm=SHA256" in answer.url
    assert answer.content_type == "image/webp"
    async with httpx.AsyncClient() as http:
        served = await http.get(answer.url)
        assert served.status_code == 200
        assert served.headers["content-type"] == "image/webp"
        assert served.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert served.content.startswith(b"webp bytes of small")

        expires = answer.url.split("Expires=")[1].split("&")[0]
        signature = answer.url.split("Signature=")[1].split("&")[0]
        tampered = answer.url.replace(
            signature, signature[:-4] + ("AAAA" if signature[-4:] != "AAAA" else "BBBB")
        )
        other_path = answer.url.replace("/small.webp", "/large.webp")
        later = answer.url.replace(f"Expires={expires}", f"Expires={int(expires) + 3600}")
        original = answer.url.replace(
            f"variants/{image.sha256}/small.webp", f"originals/{image.sha256}"
        )
        for bad in (tampered, other_path, later, original, answer.url.split("?")[0]):
            assert (await http.get(bad)).status_code == 403, bad


async def test_repeated_calls_in_one_bucket_give_the_same_url(
    delivery_service: ServiceProcess, database_url: str, aws: AwsResources, api_key: str
) -> None:
    (image_id,) = await seed_ready_images(database_url, aws, 1, put_objects=False)
    request = pb.GetDownloadUrlRequest(
        image_id=image_id, variant="thumbnail", format=image_pb2.VARIANT_FORMAT_FALLBACK
    )
    first = await _call(delivery_service, api_key, "GetDownloadUrl", request)
    second = await _call(delivery_service, api_key, "GetDownloadUrl", request)
    assert first.url == second.url
    assert first.url.split("?")[0].endswith("/thumbnail.jpg")
    assert first.content_type == "image/jpeg"


async def test_batch_over_the_wire(
    delivery_service: ServiceProcess, database_url: str, aws: AwsResources, api_key: str
) -> None:
    ready = await seed_ready_images(database_url, aws, 3, put_objects=False)
    pending = await seed_record(database_url, "pending")
    ids = [ready[2], pending, ready[0], ready[2], ready[1]]
    answer = await _call(
        delivery_service,
        api_key,
        "BatchGetDownloadUrls",
        pb.BatchGetDownloadUrlsRequest(image_ids=ids, variant="medium"),
    )
    assert [u.image_id for u in answer.download_urls] == [ready[2], ready[0], ready[1]]
    assert list(answer.not_found_image_ids) == [pending]
    assert all(u.variant == "medium" and u.expire_time.seconds > 0 for u in answer.download_urls)

    for image_ids, reason in (
        ([], "NO_IMAGE_IDS"),
        ([ready[0]] * 3 + ["x" * 26], "INVALID_IMAGE_ID"),
    ):
        error = await _refused(
            delivery_service,
            api_key,
            "BatchGetDownloadUrls",
            pb.BatchGetDownloadUrlsRequest(image_ids=image_ids, variant="medium"),
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert _reason(error)[0] == reason
    too_many = [seed for seed in await seed_ready_images(database_url, aws, 51, put_objects=False)]
    error = await _refused(
        delivery_service,
        api_key,
        "BatchGetDownloadUrls",
        pb.BatchGetDownloadUrlsRequest(image_ids=too_many, variant="medium"),
    )
    assert _reason(error)[0] == "TOO_MANY_IMAGE_IDS"
    fifty = await _call(
        delivery_service,
        api_key,
        "BatchGetDownloadUrls",
        pb.BatchGetDownloadUrlsRequest(image_ids=too_many[:50], variant="medium"),
    )
    assert len(fifty.download_urls) == 50


async def test_not_found_and_not_ready_carry_their_reasons(
    delivery_service: ServiceProcess, database_url: str, api_key: str
) -> None:
    from imagery.common.ids import new_image_id

    unknown = new_image_id()
    error = await _refused(
        delivery_service,
        api_key,
        "GetDownloadUrl",
        pb.GetDownloadUrlRequest(image_id=unknown, variant="small"),
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert _reason(error) == ("IMAGE_NOT_FOUND", {"image_id": unknown})

    failed = await seed_record(database_url, "failed", failure_reason="CORRUPT")
    error = await _refused(
        delivery_service,
        api_key,
        "GetDownloadUrl",
        pb.GetDownloadUrlRequest(image_id=failed, variant="small"),
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert _reason(error) == ("IMAGE_NOT_READY", {"image_id": failed, "status": "failed"})
    image = (
        await _call(delivery_service, api_key, "GetImage", pb.GetImageRequest(image_id=failed))
    ).image
    assert (image.status, image.failure_reason) == (image_pb2.IMAGE_STATUS_FAILED, "CORRUPT")

    error = await _refused(
        delivery_service, api_key, "GetImage", pb.GetImageRequest(image_id="../etc/passwd")
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_signing_and_cache_metrics(
    database_url: str,
    aws: AwsResources,
    cdn_env: dict[str, str],
    tmp_path: Path,
    api_key: str,
) -> None:
    from imagery.devstack.pipeline import service_env
    from imagery.devstack.procs import free_port

    metrics_port = free_port()
    with ServiceProcess(
        "delivery",
        "imagery.delivery",
        free_port(),
        tmp_path / "d.log",
        {**service_env(database_url, aws), **cdn_env, "METRICS_PORT": str(metrics_port)},
        echo=None,
    ) as service:
        (image_id,) = await seed_ready_images(database_url, aws, 1, put_objects=False)
        for _ in range(3):
            await _call(
                service,
                api_key,
                "GetDownloadUrl",
                pb.GetDownloadUrlRequest(image_id=image_id, variant="small"),
            )
        async with httpx.AsyncClient() as http:
            exposition = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
        lines = exposition.splitlines()
        assert any(
            line.startswith("imagery_delivery_urls_signed_total{") and line.endswith(" 1.0")
            for line in lines
        )
        assert any(
            'result="hit"' in line and line.endswith(" 2.0")
            for line in lines
            if "signature_cache_lookups" in line
        )
        rpc = [
            line
            for line in lines
            if line.startswith("rpc_server_call_duration_seconds")
            and "GetDownloadUrl" in line
            and "_count" in line
        ]
        assert rpc and rpc[0].endswith(" 3.0"), rpc


async def test_a_database_outage_is_unavailable_and_retryable_never_answered_from_memory(
    delivery_service: ServiceProcess,
    database_url: str,
    aws: AwsResources,
    postgres_server: object,
    api_key: str,
) -> None:
    (image_id,) = await seed_ready_images(database_url, aws, 1, put_objects=False)
    request = pb.GetDownloadUrlRequest(image_id=image_id, variant="small")
    batch = pb.BatchGetDownloadUrlsRequest(image_ids=[image_id], variant="small")
    await _call(delivery_service, api_key, "GetDownloadUrl", request)  # cached in delivery now
    admin = postgres_server.admin_dsn  # type: ignore[attr-defined]

    await allow_connections(database_url, admin, False)
    try:
        for method, message in (("GetDownloadUrl", request), ("BatchGetDownloadUrls", batch)):
            down = await _refused(delivery_service, api_key, method, message)
            assert down.code() == grpc.StatusCode.UNAVAILABLE, method
            assert "retry with exponential backoff" in (down.details() or "")
            assert _reason(down)[0] == "DEPENDENCY_UNAVAILABLE"
            status = rpc_status.from_call(down)  # type: ignore[arg-type]
            assert status is not None
            retry = error_details_pb2.RetryInfo()
            assert any(d.Unpack(retry) for d in status.details), "UNAVAILABLE says when to retry"
            assert retry.retry_delay.ToMilliseconds() > 0
    finally:
        await allow_connections(database_url, admin, True)

    # the pool reconnects
    answer = await _call(delivery_service, api_key, "GetDownloadUrl", request)
    assert answer.url and answer.image_id == image_id
