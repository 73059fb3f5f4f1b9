"""Issue 5 end to end, through every process a user talks to: UploadService, the bucket, the
processor, DeliveryService and the CloudFront stand-in."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import httpx
import pytest
from PIL import Image

from imagery.devstack.aws import AwsResources
from imagery.devstack.pipeline import Pipeline
from imagery.devstack.services import ServiceProcess
from imagery.v1 import delivery_service_pb2 as dpb
from imagery.v1 import delivery_service_pb2_grpc as dpb_grpc
from imagery.v1 import image_pb2
from imagery.v1 import upload_service_pb2 as upb
from imagery.v1 import upload_service_pb2_grpc as upb_grpc
from tests import grpc_auth, images

pytestmark = pytest.mark.e2e


@pytest.fixture
def processor(database_url: str, aws: AwsResources, tmp_path: Path) -> Iterator[ServiceProcess]:
    process = Pipeline(database_url, aws, tmp_path).processor(
        PROCESSOR_CONTENT_GRACE_SECONDS="1", PROCESSOR_GC_INTERVAL_SECONDS="1"
    )
    yield process
    process.stop()


class Client:
    """A client of one project, holding its API key."""

    def __init__(self, upload: ServiceProcess, delivery: ServiceProcess, key: str) -> None:
        self.upload = upb_grpc.UploadServiceStub(grpc_auth.channel(f"127.0.0.1:{upload.port}", key))
        self.delivery = dpb_grpc.DeliveryServiceStub(
            grpc_auth.channel(f"127.0.0.1:{delivery.port}", key)
        )

    async def upload_bytes(self, body: bytes, content_type: str) -> str:
        ticket = await self.upload.CreateUploadUrl(
            upb.CreateUploadUrlRequest(content_type=content_type, file_name="photo")
        )
        async with httpx.AsyncClient() as http:
            put = await http.put(
                ticket.upload_url, content=body, headers=dict(ticket.required_headers)
            )
        assert put.status_code == 200
        return ticket.image_id

    async def wait_ready(self, image_id: str, within: float = 60) -> image_pb2.Image:
        for _ in range(int(within / 0.2)):
            image = (await self.delivery.GetImage(dpb.GetImageRequest(image_id=image_id))).image
            if image.status in (image_pb2.IMAGE_STATUS_READY, image_pb2.IMAGE_STATUS_FAILED):
                return image
            await asyncio.sleep(0.2)
        raise AssertionError(f"{image_id} not terminal within {within} s")


@pytest.fixture
async def client(
    upload_service: ServiceProcess,
    delivery_service: ServiceProcess,
    processor: ServiceProcess,
    api_key: str,
) -> Client:
    return Client(upload_service, delivery_service, api_key)


async def test_every_variant_is_served_with_its_type_and_cache_headers(
    client: Client, edge: str
) -> None:
    image_id = await client.upload_bytes(images.jpeg(1000, 750, orientation=6), "image/jpeg")
    image = await client.wait_ready(image_id)
    assert image.status == image_pb2.IMAGE_STATUS_READY
    assert (image.width, image.height) == (750, 1000)
    made = {v.name for v in image.variants}
    assert made == {"thumbnail", "small", "medium"}, "large and original: on first request"
    for name in ("large", "original"):  # meanwhile the nearest one serves, marked
        first = await client.delivery.GetDownloadUrl(
            dpb.GetDownloadUrlRequest(image_id=image_id, variant=name)
        )
        assert first.fallback and first.served_variant == "medium", first
    for _ in range(150):
        image = (await client.delivery.GetImage(dpb.GetImageRequest(image_id=image_id))).image
        if len(image.variants) == 10:
            break
        await asyncio.sleep(0.2)
    listed = {(v.name, v.format): (v.width, v.height, v.size_bytes) for v in image.variants}
    assert set(listed) == {
        (n, f)
        for n in ("thumbnail", "small", "medium", "large", "original")
        for f in ("webp", "jpeg")
    }
    async with httpx.AsyncClient() as http:
        for (name, fmt), (width, height, size) in listed.items():
            preference = (
                image_pb2.VARIANT_FORMAT_WEBP
                if fmt == "webp"
                else image_pb2.VARIANT_FORMAT_FALLBACK
            )
            answer = await client.delivery.GetDownloadUrl(
                dpb.GetDownloadUrlRequest(image_id=image_id, variant=name, format=preference)
            )
            served = await http.get(answer.url)
            assert served.status_code == 200, (name, fmt)
            assert served.headers["content-type"] == f"image/{fmt}" == answer.content_type
            assert served.headers["cache-control"] == "public, max-age=31536000, immutable"
            assert len(served.content) == size
            assert Image.open(io.BytesIO(served.content)).size == (width, height)
        full = await client.delivery.GetDownloadUrl(
            dpb.GetDownloadUrlRequest(
                image_id=image_id, variant="original", format=image_pb2.VARIANT_FORMAT_FALLBACK
            )
        )
        assert f"/variants/{image.sha256}/original.jpg?" in full.url
        original = full.url.replace(
            f"variants/{image.sha256}/original.jpg", f"originals/{image.sha256}"
        )
        assert (await http.get(original)).status_code == 403, "original bytes are never served"


async def _blob(database_url: str, sha: str) -> tuple[Any, int]:
    conn = await asyncpg.connect(database_url)
    try:
        count = await conn.fetchval(
            "SELECT reference_count FROM image_blobs WHERE sha256 = $1", sha
        )
        refs = await conn.fetchval("SELECT count(*) FROM image_records WHERE sha256 = $1", sha)
    finally:
        await conn.close()
    return count, refs


async def test_twenty_identical_uploads_then_deletes(
    client: Client, database_url: str, aws: AwsResources, edge: str
) -> None:
    body = images.png(300, 200, alpha=True)
    ids = await asyncio.gather(*(client.upload_bytes(body, "image/png") for _ in range(20)))
    found = await asyncio.gather(*(client.wait_ready(i) for i in ids))
    shas = {image.sha256 for image in found}
    assert len(shas) == 1 and all(image.status == image_pb2.IMAGE_STATUS_READY for image in found)
    (sha,) = shas
    assert await _blob(database_url, sha) == (20, 20)
    pipeline = Pipeline(database_url, aws, Path("."))
    variant_keys = [
        o["Key"]
        for o in pipeline.s3.list_objects_v2(Bucket=aws.bucket, Prefix=f"variants/{sha}/")[
            "Contents"
        ]
    ]
    # the presets made at ingest (large and original wait for a request), each in WebP and PNG
    assert len(variant_keys) == 6 and all(k.endswith((".webp", ".png")) for k in variant_keys), (
        "alpha: PNG fallback"
    )

    survivor, doomed = ids[0], ids[1:]
    warm = await client.delivery.BatchGetDownloadUrls(
        dpb.BatchGetDownloadUrlsRequest(image_ids=ids, variant="small")
    )
    assert len(warm.download_urls) == 20  # delivery now holds all twenty in its cache
    results = await asyncio.gather(
        *(client.upload.DeleteImage(upb.DeleteImageRequest(image_id=i)) for i in doomed)
    )
    assert all(r.deleted for r in results)
    assert await _blob(database_url, sha) == (1, 1)
    answer = await client.delivery.GetDownloadUrl(
        dpb.GetDownloadUrlRequest(image_id=survivor, variant="small")
    )
    async with httpx.AsyncClient() as http:
        assert (await http.get(answer.url)).status_code == 200, (
            "the others' deletes keep the survivor served"
        )
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await client.delivery.GetDownloadUrl(
            dpb.GetDownloadUrlRequest(image_id=doomed[0], variant="small")
        )
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND
    after = await client.delivery.BatchGetDownloadUrls(
        dpb.BatchGetDownloadUrlsRequest(image_ids=ids, variant="small")
    )
    assert [u.image_id for u in after.download_urls] == [survivor], (
        "deleted images are never answered from delivery's cache"
    )
    assert list(after.not_found_image_ids) == doomed

    assert (await client.upload.DeleteImage(upb.DeleteImageRequest(image_id=survivor))).deleted
    assert not (await client.upload.DeleteImage(upb.DeleteImageRequest(image_id=survivor))).deleted
    assert (await _blob(database_url, sha))[1] == 0

    async def collected() -> bool:
        """The processor's collector took the content once its grace period was over."""
        listed = [
            pipeline.s3.list_objects_v2(Bucket=aws.bucket, Prefix=prefix).get("KeyCount")
            for prefix in (f"variants/{sha}/", f"originals/{sha}")
        ]
        return listed == [0, 0] and await _blob(database_url, sha) == (None, 0)

    deadline = time.monotonic() + 30
    while not await collected():
        assert time.monotonic() < deadline, "unreferenced content still stored after 30 s"
        await asyncio.sleep(0.2)
    await pipeline.assert_invariants()


async def test_deleting_a_pending_image_removes_its_upload(
    client: Client, database_url: str, aws: AwsResources
) -> None:
    ticket = await client.upload.CreateUploadUrl(
        upb.CreateUploadUrlRequest(content_type="image/png", file_name="x.png")
    )
    assert (
        await client.upload.DeleteImage(upb.DeleteImageRequest(image_id=ticket.image_id))
    ).deleted
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await client.delivery.GetImage(dpb.GetImageRequest(image_id=ticket.image_id))
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND
    async with httpx.AsyncClient() as http:  # a late PUT with the still-valid URL
        await http.put(
            ticket.upload_url, content=images.png(), headers=dict(ticket.required_headers)
        )
    pipeline = Pipeline(database_url, aws, Path("."))
    for _ in range(100):
        if not pipeline.upload_keys():
            break
        await asyncio.sleep(0.1)
    assert pipeline.upload_keys() == [], "the processor dropped the orphan upload"
