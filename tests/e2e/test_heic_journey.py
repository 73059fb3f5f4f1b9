"""HEIC/HEIF input end to end (issue 19): off by default, turned on per project with
`imagery-admin projects update`, then an iPhone-like photo goes through the real upload
service, bucket, processor (its isolated, sandboxed job) and delivery service, and comes
out in the usual output formats with no EXIF left."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from PIL import Image

from imagery.devstack.aws import AwsResources
from imagery.devstack.pipeline import Pipeline
from imagery.devstack.services import ServiceProcess
from imagery.v1 import delivery_service_pb2 as dpb
from imagery.v1 import delivery_service_pb2_grpc as dpb_grpc
from imagery.v1 import image_pb2
from imagery.v1 import project_pb2 as pb
from imagery.v1 import project_service_pb2 as ppb
from imagery.v1 import project_service_pb2_grpc as pgrpc
from imagery.v1 import upload_service_pb2 as upb
from imagery.v1 import upload_service_pb2_grpc as upb_grpc
from tests import grpc_auth, images
from tests.integration.test_admin_cli import admin

pytestmark = pytest.mark.e2e
PROJECT = "phones"
DEFAULTS = "image/jpeg,image/png,image/webp,image/avif,image/gif"
GPS_IFD = 0x8825


@pytest.fixture
def processor(database_url: str, aws: AwsResources, tmp_path: Path) -> Iterator[ServiceProcess]:
    process = Pipeline(database_url, aws, tmp_path).processor()
    yield process
    process.stop()


async def _opted_in_key(upload: ServiceProcess, admin_key: str) -> str:
    """A project that turned HEIC and HEIF on with imagery-admin, and a key of it."""
    address = f"127.0.0.1:{upload.port}"
    env = {"IMAGERY_ADDRESS": address, "IMAGERY_ADMIN_KEY": admin_key}
    created = await admin("projects", "create", PROJECT, "--display-name", "Phones", **env)
    assert created.code == 0, created.err
    turned_on = await admin(
        "projects",
        "update",
        PROJECT,
        "--content-types",
        f"{DEFAULTS},image/heic,image/heif",
        **env,
    )
    assert turned_on.code == 0, turned_on.err
    async with grpc_auth.channel(address, admin_key) as channel:
        projects = pgrpc.ProjectServiceStub(channel)
        shown = await projects.GetProject(ppb.GetProjectRequest(name=f"projects/{PROJECT}"))
        assert "image/heic" in shown.project.settings.content_types
        made = await projects.CreateApiKey(
            ppb.CreateApiKeyRequest(
                parent=f"projects/{PROJECT}",
                api_key=pb.ApiKey(display_name="app", scopes=["images.create", "images.read"]),
            )
        )
    key: str = made.key
    return key


async def _ready(
    upload: ServiceProcess, delivery: ServiceProcess, key: str, body: bytes, content_type: str
) -> image_pb2.Image:
    async with (
        grpc_auth.channel(f"127.0.0.1:{upload.port}", key) as up,
        grpc_auth.channel(f"127.0.0.1:{delivery.port}", key) as down,
    ):
        ticket = await upb_grpc.UploadServiceStub(up).CreateUploadUrl(
            upb.CreateUploadUrlRequest(content_type=content_type, file_name="IMG_0001.HEIC")
        )
        async with httpx.AsyncClient() as http:
            put = await http.put(
                ticket.upload_url, content=body, headers=dict(ticket.required_headers)
            )
        assert put.status_code == 200
        for _ in range(300):
            answer = await dpb_grpc.DeliveryServiceStub(down).GetImage(
                dpb.GetImageRequest(image_id=ticket.image_id)
            )
            if answer.image.status in (image_pb2.IMAGE_STATUS_READY, image_pb2.IMAGE_STATUS_FAILED):
                image: image_pb2.Image = answer.image
                return image
            await asyncio.sleep(0.2)
    raise AssertionError(f"{ticket.image_id} not terminal in time")


async def test_a_project_that_opted_in_gets_heic_photos_as_metadata_free_variants(
    upload_service: ServiceProcess,
    delivery_service: ServiceProcess,
    processor: ServiceProcess,
    keys: dict[str, str],
    edge: str,
) -> None:
    key = await _opted_in_key(upload_service, keys["IMAGERY_ADMIN_KEY"])
    photo = images.heic(1200, 900, orientation=6, gps=True, tile_size=256)
    image = await _ready(upload_service, delivery_service, key, photo, "image/heic")
    assert image.status == image_pb2.IMAGE_STATUS_READY, image.failure_reason
    assert (image.detected_format, image.width, image.height) == ("heic", 900, 1200)
    made = {(v.name, v.format) for v in image.variants}
    assert made == {(n, f) for n in ("thumbnail", "small", "medium") for f in ("webp", "jpeg")}
    async with (
        grpc_auth.channel(f"127.0.0.1:{delivery_service.port}", key) as down,
        httpx.AsyncClient() as http,
    ):
        delivery = dpb_grpc.DeliveryServiceStub(down)
        for variant in image.variants:
            preference = (
                image_pb2.VARIANT_FORMAT_WEBP
                if variant.format == "webp"
                else image_pb2.VARIANT_FORMAT_FALLBACK
            )
            answer = await delivery.GetDownloadUrl(
                dpb.GetDownloadUrlRequest(
                    image_id=image.image_id, variant=variant.name, format=preference
                )
            )
            served = await http.get(answer.url)
            assert served.status_code == 200
            assert served.headers["content-type"] == f"image/{variant.format}"
            with Image.open(io.BytesIO(served.content)) as picture:
                assert picture.size == (variant.width, variant.height)
                upright = variant.name == "thumbnail" or picture.height > picture.width
                assert upright, "turned once (libheif's irot), not again by EXIF"
                exif = picture.getexif()
                assert not exif.get_ifd(GPS_IFD) and not len(exif), variant
                assert "exif" not in picture.info and "xmp" not in picture.info

    # The same bytes declared as image/heif (the family's type): the known content is linked.
    again = await _ready(upload_service, delivery_service, key, photo, "image/heif")
    assert again.status == image_pb2.IMAGE_STATUS_READY, again.failure_reason
    assert (again.sha256, again.detected_format) == (image.sha256, "heic")


async def test_a_project_that_did_not_opt_in_is_refused_at_create_upload_url(
    upload_service: ServiceProcess, api_key: str
) -> None:
    async with grpc_auth.channel(f"127.0.0.1:{upload_service.port}", api_key) as channel:
        stub = upb_grpc.UploadServiceStub(channel)
        for content_type in ("image/heic", "image/heif"):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.CreateUploadUrl(
                    upb.CreateUploadUrlRequest(content_type=content_type, file_name="a.heic")
                )
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            status = rpc_status.from_call(caught.value)  # type: ignore[arg-type]
            assert status is not None
            info = error_details_pb2.ErrorInfo()
            assert status.details[0].Unpack(info)
            assert info.reason == "UNSUPPORTED_CONTENT_TYPE"
            assert info.metadata["allowed"] == DEFAULTS.replace(",", ", ")
