"""Placeholders, colours and near-duplicates end to end (issue 19): real uploads through the
real processor (its isolated job), read back over gRPC from DeliveryService, and
`imagery-admin similar` against the same database."""

from __future__ import annotations

import asyncio
import io
import random
from collections.abc import Iterator
from pathlib import Path

import fast_thumbhash  # type: ignore[import-untyped]
import httpx
import pytest
from blurhash_rs import blurhash_decode
from google.protobuf.field_mask_pb2 import FieldMask
from PIL import Image, ImageDraw, ImageEnhance

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
from tests import grpc_auth
from tests.integration.test_admin_cli import admin

pytestmark = pytest.mark.e2e
PROJECT = "palette"
BASE83 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#$%*+,-.:;=?@[]^_{|}~"


@pytest.fixture
def processor(database_url: str, aws: AwsResources, tmp_path: Path) -> Iterator[ServiceProcess]:
    process = Pipeline(database_url, aws, tmp_path).processor()
    yield process
    process.stop()


async def _project_key(upload: ServiceProcess, admin_key: str, components: tuple[int, int]) -> str:
    """A project whose profile asks for `components` BlurHash components, and its key."""
    async with grpc_auth.channel(f"127.0.0.1:{upload.port}", admin_key) as channel:
        projects = pgrpc.ProjectServiceStub(channel)
        await projects.CreateProject(
            ppb.CreateProjectRequest(project_id=PROJECT, project=pb.Project(display_name="P"))
        )
        profile = pb.VariantProfile(
            presets=[pb.VariantPreset(name="thumb", width=120, height=120, fit=pb.FIT_COVER)],
            blurhash_components=pb.BlurHashComponents(x=components[0], y=components[1]),
        )
        answer = await projects.UpdateProject(
            ppb.UpdateProjectRequest(
                project=pb.Project(name=f"projects/{PROJECT}", variant_profile=profile),
                update_mask=FieldMask(paths=["variant_profile"]),
            )
        )
        shown = answer.project.variant_profile.blurhash_components
        assert (shown.x, shown.y) == components
        created = await projects.CreateApiKey(
            ppb.CreateApiKeyRequest(
                parent=f"projects/{PROJECT}",
                api_key=pb.ApiKey(display_name="app", scopes=["images.create", "images.read"]),
            )
        )
    key: str = created.key
    return key


async def _upload_ready(
    upload: ServiceProcess, delivery: ServiceProcess, key: str, body: bytes, content_type: str
) -> image_pb2.Image:
    async with (
        grpc_auth.channel(f"127.0.0.1:{upload.port}", key) as up,
        grpc_auth.channel(f"127.0.0.1:{delivery.port}", key) as down,
    ):
        ticket = await upb_grpc.UploadServiceStub(up).CreateUploadUrl(
            upb.CreateUploadUrlRequest(content_type=content_type, file_name="picture")
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
            if answer.image.status == image_pb2.IMAGE_STATUS_READY:
                image: image_pb2.Image = answer.image
                return image
            assert answer.image.status != image_pb2.IMAGE_STATUS_FAILED, answer.image
            await asyncio.sleep(0.2)
    raise AssertionError(f"{ticket.image_id} not READY in time")


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _scene(seed: int, size: tuple[int, int] = (800, 600)) -> Image.Image:
    """A picture with structure (overlapping discs of colour), different for each seed."""
    rng = random.Random(seed)
    image = Image.new("RGB", size, (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x, y, r = rng.randrange(size[0]), rng.randrange(size[1]), rng.randrange(40, 250)
        fill = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
    return image


def _rgb(color: str) -> tuple[int, int, int]:
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


def _near(color: str, expected: tuple[int, int, int], tolerance: int = 6) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(_rgb(color), expected, strict=True))


async def test_placeholders_and_colours_match_the_image_and_near_duplicates_are_found(
    upload_service: ServiceProcess,
    delivery_service: ServiceProcess,
    processor: ServiceProcess,
    keys: dict[str, str],
    database_url: str,
) -> None:
    key = await _project_key(upload_service, keys["IMAGERY_ADMIN_KEY"], (5, 4))

    red = await _upload_ready(
        upload_service,
        delivery_service,
        key,
        _png(Image.new("RGB", (640, 480), (255, 0, 0))),
        "image/png",
    )
    assert _near(red.average_color, (255, 0, 0))
    assert [c.color for c in red.dominant_colors] == ["#ff0000"]
    assert red.dominant_colors[0].fraction == pytest.approx(1.0)
    # the project's 5x4 components: the size flag (5 - 1) + (4 - 1) * 9, the maximum AC, 4
    # characters of DC, then 2 per AC component
    placeholder = red.placeholder.blurhash
    assert placeholder[0] == BASE83[4 + 3 * 9] and len(placeholder) == 6 + 2 * (5 * 4 - 1)
    decoded = blurhash_decode(placeholder, 4, 4).tobytes()
    pixels = [tuple(decoded[i : i + 3]) for i in range(0, len(decoded), 3)]
    assert all(abs(p[0] - 255) <= 8 and p[1] <= 8 and p[2] <= 8 for p in pixels), pixels
    r, g, b, alpha = fast_thumbhash.thumb_hash_to_average_rgba(red.placeholder.thumbhash)
    assert r > 0.9 and g < 0.1 and b < 0.1 and alpha == 1.0
    assert fast_thumbhash.thumb_hash_to_approximate_aspect_ratio(
        red.placeholder.thumbhash
    ) == pytest.approx(640 / 480, rel=0.1)

    # the same bytes again share the stored content, and with it the same values
    again = await _upload_ready(
        upload_service,
        delivery_service,
        key,
        _png(Image.new("RGB", (640, 480), (255, 0, 0))),
        "image/png",
    )
    assert again.image_id != red.image_id and again.sha256 == red.sha256
    assert (again.placeholder, again.average_color) == (red.placeholder, red.average_color)
    assert list(again.dominant_colors) == list(red.dominant_colors)

    # half blue, half white: two dominant colours of about one half each (the reduction they
    # are read from blends the pixels along the edge: a few percent of a colour between)
    halves = Image.new("RGB", (400, 300), (255, 255, 255))
    halves.paste((0, 0, 255), (0, 0, 200, 300))
    split = await _upload_ready(upload_service, delivery_service, key, _png(halves), "image/png")
    shares = [(c.color, c.fraction) for c in split.dominant_colors]
    assert {color for color, _ in shares[:2]} == {"#0000ff", "#ffffff"}, shares
    assert all(share == pytest.approx(0.5, abs=0.06) for _, share in shares[:2]), shares
    assert sum(share for _, share in shares[2:]) <= 0.06, shares
    assert _near(split.average_color, (128, 128, 255), 8)

    # near duplicates: a brighter, smaller, recompressed copy is found; another picture is not
    scene = _scene(1)
    original, copy, other = [
        await _upload_ready(upload_service, delivery_service, key, body, "image/jpeg")
        for body in (
            _jpeg(scene),
            _jpeg(ImageEnhance.Brightness(scene).enhance(1.08).resize((760, 570)), 75),
            _jpeg(_scene(2)),
        )
    ]
    found = await admin("similar", original.image_id, "--json", database_url=database_url)
    assert found.code == 0, found.err
    listed = {s["image_id"]: s["distance"] for s in found.json()["similar"]}
    assert copy.image_id in listed and listed[copy.image_id] <= 3, listed
    assert other.image_id not in listed and red.image_id not in listed, listed
    strict = await admin(
        "similar", original.image_id, "--max-distance", "0", "--json", database_url=database_url
    )
    assert strict.code == 0, strict.err
    assert all(s["distance"] == 0 for s in strict.json()["similar"])
    text = await admin("similar", copy.image_id, database_url=database_url)
    assert text.code == 0 and original.image_id in text.out, text.out
