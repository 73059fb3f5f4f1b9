"""BatchGetImages, ListImages and several-variant batches as a client sees them: a real
delivery process over a socket, real Postgres."""

from __future__ import annotations

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from imagery.common.ids import new_image_id
from imagery.devstack.aws import AwsResources
from imagery.devstack.fixtures import seed_ready_images, seed_record
from imagery.devstack.services import ServiceProcess
from imagery.v1 import delivery_service_pb2 as pb
from imagery.v1 import delivery_service_pb2_grpc as pb_grpc
from imagery.v1 import errors_pb2, image_pb2
from tests import grpc_auth

pytestmark = pytest.mark.e2e


def _stub(
    service: ServiceProcess, key: str
) -> tuple[grpc.aio.Channel, pb_grpc.DeliveryServiceAsyncStub]:
    channel = grpc_auth.channel(f"127.0.0.1:{service.port}", key)
    return channel, pb_grpc.DeliveryServiceStub(channel)


def _details(err: grpc.aio.AioRpcError) -> tuple[str, list[str]]:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None
    info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    fields: list[str] = []
    for detail in status.details:
        if detail.Unpack(bad):
            fields += [v.field for v in bad.field_violations]
    assert status.details[0].Unpack(info)
    return info.reason, fields


async def test_batch_get_images_answers_each_id_once_in_request_order(
    delivery_service: ServiceProcess, database_url: str, aws: AwsResources, api_key: str
) -> None:
    ready = await seed_ready_images(database_url, aws, 2, put_objects=False)
    pending = await seed_record(database_url, "pending")
    unknown = new_image_id()
    channel, stub = _stub(delivery_service, api_key)
    async with channel:
        answer = await stub.BatchGetImages(
            pb.BatchGetImagesRequest(image_ids=[pending, ready[1], unknown, ready[0], pending])
        )
        assert [i.image_id for i in answer.images] == [pending, ready[1], ready[0]]
        assert [i.status for i in answer.images] == [
            image_pb2.IMAGE_STATUS_PENDING,
            image_pb2.IMAGE_STATUS_READY,
            image_pb2.IMAGE_STATUS_READY,
        ]
        assert len(answer.images[1].variants) == 10
        assert list(answer.not_found_image_ids) == [unknown]
        with pytest.raises(grpc.aio.AioRpcError) as many:
            await stub.BatchGetImages(
                pb.BatchGetImagesRequest(image_ids=[new_image_id() for _ in range(101)])
            )
        assert many.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert _details(many.value)[0] == "TOO_MANY_IMAGE_IDS"


async def test_list_images_pages_a_filtered_listing_newest_first(
    delivery_service: ServiceProcess, database_url: str, aws: AwsResources, api_key: str
) -> None:
    ready = await seed_ready_images(database_url, aws, 5, put_objects=False)
    failed = await seed_record(database_url, "failed", failure_reason="CORRUPT")
    conn = await asyncpg.connect(database_url)
    try:  # the labels UpdateImage sets; ordered creation times, the newest last
        for minutes, image_id in enumerate([*ready, failed]):
            await conn.execute(
                "UPDATE image_records SET labels = $2::jsonb,"
                " created_at = now() - make_interval(mins => $3) WHERE id = $1",
                image_id,
                '{"team": "feed"}' if minutes % 2 == 0 else "{}",
                100 - minutes,
            )
    finally:
        await conn.close()
    channel, stub = _stub(delivery_service, api_key)
    async with channel:
        listed: list[str] = []
        request = pb.ListImagesRequest(
            page_size=2, filter='status = READY AND labels.team = "feed"'
        )
        for _ in range(5):
            page = await stub.ListImages(request)
            listed += [i.image_id for i in page.images]
            assert all(i.labels["team"] == "feed" for i in page.images)
            if not page.next_page_token:
                break
            request.page_token = page.next_page_token
        assert listed == [ready[4], ready[2], ready[0]]
        everything = await stub.ListImages(pb.ListImagesRequest())
        assert [i.image_id for i in everything.images] == [failed, *reversed(ready)]
        assert everything.next_page_token == ""

        for bad, field in (
            (pb.ListImagesRequest(filter="status > READY"), "filter"),
            (pb.ListImagesRequest(filter="size_bytes = 3"), "filter"),
            (pb.ListImagesRequest(page_size=5000), "page_size"),
            (pb.ListImagesRequest(page_token="not-a-token"), "page_token"),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.ListImages(bad)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert _details(refused.value) == ("INVALID_ARGUMENT", [field])
            assert "filter on status" in (refused.value.details() or "") or field != "filter"


async def test_a_srcset_batch_signs_each_variant_and_says_why_others_are_missing(
    delivery_service: ServiceProcess, database_url: str, aws: AwsResources, api_key: str
) -> None:
    (ready,) = await seed_ready_images(database_url, aws, 1, put_objects=False)
    pending = await seed_record(database_url, "pending")
    failed = await seed_record(database_url, "failed", failure_reason="CORRUPT")
    unknown = new_image_id()
    channel, stub = _stub(delivery_service, api_key)
    async with channel:
        answer = await stub.BatchGetDownloadUrls(
            pb.BatchGetDownloadUrlsRequest(
                image_ids=[unknown, ready, pending, failed],
                variants=["small", "medium", "large"],
            )
        )
        assert [(u.image_id, u.variant) for u in answer.download_urls] == [
            (ready, "small"),
            (ready, "medium"),
            (ready, "large"),
        ]
        assert all(u.url.split("?")[0].endswith(f"/{u.variant}.webp") for u in answer.download_urls)
        reasons = {
            unknown: errors_pb2.ERROR_REASON_IMAGE_NOT_FOUND,
            pending: errors_pb2.ERROR_REASON_IMAGE_NOT_READY,
            failed: errors_pb2.ERROR_REASON_IMAGE_FAILED,
        }
        assert [(f.image_id, f.variant, f.reason) for f in answer.failures] == [
            (image_id, variant, reasons[image_id])
            for image_id in (unknown, pending, failed)
            for variant in ("small", "medium", "large")
        ]
        assert list(answer.not_found_image_ids) == [unknown, pending, failed]

        for bad, reason in (
            (
                pb.BatchGetDownloadUrlsRequest(image_ids=[ready], variants=["small", "huge"]),
                "UNKNOWN_VARIANT",
            ),
            (
                pb.BatchGetDownloadUrlsRequest(image_ids=[ready], variant="small", format=7),  # type: ignore[arg-type]
                "INVALID_ARGUMENT",
            ),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.BatchGetDownloadUrls(bad)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert _details(refused.value)[0] == reason
        with pytest.raises(grpc.aio.AioRpcError) as unknown_format:
            await stub.GetDownloadUrl(
                pb.GetDownloadUrlRequest(image_id=ready, variant="small", format=7)  # type: ignore[arg-type]
            )
        assert _details(unknown_format.value) == ("INVALID_ARGUMENT", ["format"])
