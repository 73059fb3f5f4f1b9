"""Variant profiles end to end, through every process a team and an operator talk to: a
project's new profile version renders new uploads with it, a lazy preset is rendered once on
its first requests (however many arrive at once), and `imagery-admin backfill` turns the
older images to the new version while every URL keeps working."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
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
PROJECT = "gallery"
WEBP = image_pb2.VARIANT_FORMAT_WEBP
PROFILE = pb.VariantProfile(
    presets=[
        pb.VariantPreset(name="thumb", width=120, height=120, fit=pb.FIT_COVER),
        pb.VariantPreset(name="card", width=300, height=200, fit=pb.FIT_COVER, formats=["webp"]),
        pb.VariantPreset(name="hero", width=1200, height=800, lazy=True),
    ],
    lazy_policy=pb.LAZY_POLICY_FALLBACK,
)


@pytest.fixture
def processor(database_url: str, aws: AwsResources, tmp_path: Path) -> Iterator[ServiceProcess]:
    process = Pipeline(database_url, aws, tmp_path).processor(
        PROCESSOR_GC_INTERVAL_SECONDS="1", RENDER_POLL_SECONDS="0.1", LOG_FORMAT="json"
    )
    yield process
    process.stop()


class Team:
    def __init__(self, upload: ServiceProcess, delivery: ServiceProcess, key: str) -> None:
        self.upload = upb_grpc.UploadServiceStub(grpc_auth.channel(f"127.0.0.1:{upload.port}", key))
        self.delivery = dpb_grpc.DeliveryServiceStub(
            grpc_auth.channel(f"127.0.0.1:{delivery.port}", key)
        )

    async def upload_ready(self, body: bytes) -> image_pb2.Image:
        ticket = await self.upload.CreateUploadUrl(
            upb.CreateUploadUrlRequest(content_type="image/jpeg", file_name="photo.jpg")
        )
        async with httpx.AsyncClient() as http:
            put = await http.put(
                ticket.upload_url, content=body, headers=dict(ticket.required_headers)
            )
        assert put.status_code == 200
        for _ in range(300):
            image = await self.image(ticket.image_id)
            if image.status == image_pb2.IMAGE_STATUS_READY:
                return image
            await asyncio.sleep(0.2)
        raise AssertionError(f"{ticket.image_id} not READY in time")

    async def image(self, image_id: str) -> image_pb2.Image:
        answer = await self.delivery.GetImage(dpb.GetImageRequest(image_id=image_id))
        return answer.image

    async def url(self, image_id: str, variant: str) -> dpb.GetDownloadUrlResponse:
        request = dpb.GetDownloadUrlRequest(image_id=image_id, variant=variant, format=WEBP)
        answer: dpb.GetDownloadUrlResponse = await self.delivery.GetDownloadUrl(request)
        return answer


async def _team(upload: ServiceProcess, admin_key: str) -> str:
    async with grpc_auth.channel(f"127.0.0.1:{upload.port}", admin_key) as channel:
        projects = pgrpc.ProjectServiceStub(channel)
        await projects.CreateProject(
            ppb.CreateProjectRequest(project_id=PROJECT, project=pb.Project(display_name="G"))
        )
        created = await projects.CreateApiKey(
            ppb.CreateApiKeyRequest(
                parent=f"projects/{PROJECT}",
                api_key=pb.ApiKey(display_name="app", scopes=["images.create", "images.read"]),
            )
        )
    key: str = created.key
    return key


async def _set_profile(upload: ServiceProcess, admin_key: str) -> pb.VariantProfile:
    async with grpc_auth.channel(f"127.0.0.1:{upload.port}", admin_key) as channel:
        answer = await pgrpc.ProjectServiceStub(channel).UpdateProject(
            ppb.UpdateProjectRequest(
                project=pb.Project(name=f"projects/{PROJECT}", variant_profile=PROFILE),
                update_mask=FieldMask(paths=["variant_profile"]),
            )
        )
    profile: pb.VariantProfile = answer.project.variant_profile
    return profile


async def _fetch(url: str) -> tuple[int, tuple[int, int] | None]:
    async with httpx.AsyncClient() as http:
        got = await http.get(url)
    size = Image.open(io.BytesIO(got.content)).size if got.status_code == 200 else None
    return got.status_code, size


def _renders(processor: ServiceProcess, address: str, preset: str) -> int:
    """How often the processor rendered `preset` of the content at `address` (its log)."""
    lines = (json.loads(line) for line in processor.log_path.read_text().splitlines())
    return sum(
        1
        for line in lines
        if line.get("message") == "variant rendered"
        and (line.get("sha256"), line.get("preset")) == (address, preset)
    )


async def test_a_new_profile_version_lazy_presets_and_a_backfill_without_a_gap(
    upload_service: ServiceProcess,
    delivery_service: ServiceProcess,
    processor: ServiceProcess,
    edge: str,
    keys: dict[str, str],
    database_url: str,
) -> None:
    team = Team(
        upload_service, delivery_service, await _team(upload_service, keys["IMAGERY_ADMIN_KEY"])
    )
    older = await team.upload_ready(images.jpeg(1600, 1200))
    assert older.profile_version == 0
    assert {v.name for v in older.variants} >= {"thumbnail", "small", "medium"}

    profile = await _set_profile(upload_service, keys["IMAGERY_ADMIN_KEY"])
    assert profile.version == 1

    # a new upload renders the new version's at-ingest presets, under keys of its own
    newer = await team.upload_ready(images.jpeg(1500, 1000))
    assert newer.profile_version == 1
    assert {(v.name, v.format) for v in newer.variants} == {
        ("thumb", "webp"),
        ("thumb", "jpeg"),
        ("card", "webp"),
    }
    card = await team.url(newer.image_id, "card")
    assert "/v1/card.webp?" in card.url
    assert await _fetch(card.url) == (200, (300, 200))

    # the lazy preset: twenty requests at once are all answered (the nearest rendered variant,
    # marked), and it is rendered once
    first = await asyncio.gather(*(team.url(newer.image_id, "hero") for _ in range(20)))
    assert first[0].fallback, "the first request cannot find it rendered"
    assert all(a.url and (not a.fallback or a.served_variant == "card") for a in first)
    for _ in range(150):
        hero = await team.url(newer.image_id, "hero")
        if not hero.fallback:
            break
        await asyncio.sleep(0.2)
    assert not hero.fallback, "the lazy preset was rendered"
    assert "/v1/hero.webp?" in hero.url
    assert await _fetch(hero.url) == (200, (1200, 800))
    shown = await team.image(newer.image_id)
    assert {v.name for v in shown.variants} == {"thumb", "card", "hero"}
    address = hero.url.split("/variants/", 1)[1].split("/", 1)[0]
    assert _renders(processor, address, "hero") == 1, "twenty requests, one rendering"

    # the older image: a preset of the new version it lacks is served meanwhile, then the
    # backfill brings it to version 1; its URLs answer at every step
    meanwhile = await team.url(older.image_id, "thumb")
    assert meanwhile.fallback and meanwhile.served_variant == "thumbnail"
    assert await _fetch(meanwhile.url) == (200, (150, 150))
    dry = await admin(
        "backfill", "--project", PROJECT, "--dry-run", "--json", database_url=database_url
    )
    assert dry.code == 0, dry.err
    # the older image's content lacks card (and thumb, unless its lazy ask is done already)
    assert dry.json()["blobs"] == 1 and dry.json()["renders"] in (1, 2), dry.out
    backfill = asyncio.create_task(
        admin("backfill", "--project", PROJECT, "--json", database_url=database_url)
    )
    while not backfill.done():
        for name in ("thumb", "card"):
            answer = await team.url(older.image_id, name)
            status, _ = await _fetch(answer.url)
            assert status == 200, (name, answer)
        await asyncio.sleep(0.1)
    run = await backfill
    assert run.code == 0, run.err
    after = await team.image(older.image_id)
    assert after.profile_version == 1
    for name, size in (("thumb", (120, 120)), ("card", (300, 200))):
        answer = await team.url(older.image_id, name)
        assert not answer.fallback and "/v1/" in answer.url
        assert await _fetch(answer.url) == (200, size)
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await team.url(older.image_id, "small")  # not a preset of the project's profile any more
    assert gone.value.code() == grpc.StatusCode.INVALID_ARGUMENT
