"""Who may call what: every RPC of UploadService, DeliveryService and ProjectService, called
over a real socket of the real servers (built by their bootstraps) with each kind of
credential: none, malformed, unknown, revoked, expired, lacking the scope, another project's,
and the right one. Each refused call answers its code and reason and changes nothing."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from imagery.common.api_keys import key_id_of
from imagery.common.config import Settings
from imagery.common.db.projects import PostgresProjects
from imagery.common.tenancy import (
    ALL_SCOPES,
    DEFAULT_PROJECT,
    Actor,
    Project,
    ProjectSettings,
    Scope,
)
from imagery.delivery.bootstrap import build_server as build_delivery
from imagery.delivery.config import load_settings as delivery_settings
from imagery.devstack.aws import AwsResources
from imagery.devstack.fixtures import seed_ready_images
from imagery.upload.bootstrap import build_server as build_upload
from imagery.upload.config import UploadSettings
from imagery.v1 import delivery_service_pb2 as dpb
from imagery.v1 import delivery_service_pb2_grpc as dgrpc
from imagery.v1 import image_pb2, project_pb2
from imagery.v1 import project_service_pb2 as ppb
from imagery.v1 import project_service_pb2_grpc as pgrpc
from imagery.v1 import upload_service_pb2 as upb
from imagery.v1 import upload_service_pb2_grpc as ugrpc
from tests.keys import pem, private_key

pytestmark = pytest.mark.integration
TEAM = "team-b"
OK = "OK"


@dataclass
class World:
    upload: str
    delivery: str
    pool: asyncpg.Pool
    image: str  # a READY image of `default`
    keys: dict[str, str]  # case -> the key to call with (per scope where it matters)
    wrong_scope: dict[Scope, str]  # a `default` key lacking exactly that scope
    victim_key: str  # a `default` key id RevokeApiKey may revoke


@pytest.fixture
async def world(
    settings: Settings,
    database_url: str,
    aws: AwsResources,
    pool: asyncpg.Pool,
    keys: dict[str, str],
    tmp_path: Any,
) -> AsyncIterator[World]:
    projects, actor = PostgresProjects(pool), Actor("cli:test")
    await projects.create_project(
        Project(TEAM, "Team B", ProjectSettings(), secrets.token_hex(16)), actor
    )
    other = await projects.bootstrap_key(TEAM, actor, key_name="b", scopes=ALL_SCOPES)
    revoked = await projects.bootstrap_key(DEFAULT_PROJECT, actor, key_name="r", scopes=ALL_SCOPES)
    revoked_id = key_id_of(revoked.secret)
    assert revoked_id is not None
    await projects.revoke_key(DEFAULT_PROJECT, revoked_id, actor)
    made = await projects.create_key(
        DEFAULT_PROJECT, actor, display_name="e", scopes=ALL_SCOPES, expire_time=None
    )
    assert made is not None
    await pool.execute(
        "UPDATE api_keys SET expire_time = now() - interval '1 second' WHERE id = $1",
        made[0].key_id,
    )
    wrong = {}
    for scope in Scope:
        lacking = [s for s in ALL_SCOPES if s is not scope]
        key = await projects.bootstrap_key(DEFAULT_PROJECT, actor, key_name="w", scopes=lacking)
        wrong[scope] = key.secret
    victim = await projects.bootstrap_key(DEFAULT_PROJECT, actor, key_name="v", scopes=[])
    (image,) = await seed_ready_images(database_url, aws, 1, put_objects=False)
    key_file = tmp_path / "cf.pem"
    key_file.write_bytes(pem(private_key("ecdsa")))
    env = {
        "DATABASE_URL": database_url,
        "AWS_REGION": aws.region,
        "AWS_ENDPOINT_URL": aws.endpoint_url,
        "S3_BUCKET": aws.bucket,
        "CLOUDFRONT_DOMAIN": "cdn.example",
        "CLOUDFRONT_KEY_PAIR_ID": "KTEST",
        "CLOUDFRONT_PRIVATE_KEY_FILE": str(key_file),
    }
    async with AsyncExitStack() as stack:
        upload = await build_upload(UploadSettings(settings, 86_400), stack)
        delivery = await build_delivery(delivery_settings(env), stack)
        upload_port = await upload.start(0, host="127.0.0.1")
        delivery_port = await delivery.start(0, host="127.0.0.1")
        yield World(
            f"127.0.0.1:{upload_port}",
            f"127.0.0.1:{delivery_port}",
            pool,
            image,
            {
                "malformed": "Basic dXNlcjpwYXNz",
                "unknown": "imk_" + "a" * 16 + "_" + "b" * 43,
                "revoked": revoked.secret,
                "expired": made[0].secret,
                "other project": other.secret,
                "right": keys["IMAGERY_API_KEY"],
                "admin": keys["IMAGERY_ADMIN_KEY"],
            },
            wrong,
            key_id_of(victim.secret) or "",
        )
        await upload.stop()
        await delivery.stop()


Call = Callable[[grpc.aio.Channel, World], Any]


def _rpcs() -> dict[str, tuple[Scope, str, Call]]:
    """RPC name -> (scope it needs, which server, the call)."""

    def upload(ch: grpc.aio.Channel) -> ugrpc.UploadServiceAsyncStub:
        return ugrpc.UploadServiceStub(ch)

    def delivery(ch: grpc.aio.Channel) -> dgrpc.DeliveryServiceAsyncStub:
        return dgrpc.DeliveryServiceStub(ch)

    def projects(ch: grpc.aio.Channel) -> pgrpc.ProjectServiceAsyncStub:
        return pgrpc.ProjectServiceStub(ch)

    default = f"projects/{DEFAULT_PROJECT}"
    return {
        "CreateUploadUrl": (
            Scope.IMAGES_CREATE,
            "upload",
            lambda ch, w: upload(ch).CreateUploadUrl(
                upb.CreateUploadUrlRequest(content_type="image/png", file_name="a.png")
            ),
        ),
        "GetImage": (
            Scope.IMAGES_READ,
            "delivery",
            lambda ch, w: delivery(ch).GetImage(dpb.GetImageRequest(image_id=w.image)),
        ),
        "GetDownloadUrl": (
            Scope.IMAGES_READ,
            "delivery",
            lambda ch, w: delivery(ch).GetDownloadUrl(
                dpb.GetDownloadUrlRequest(image_id=w.image, variant="small")
            ),
        ),
        "BatchGetDownloadUrls": (
            Scope.IMAGES_READ,
            "delivery",
            lambda ch, w: delivery(ch).BatchGetDownloadUrls(
                dpb.BatchGetDownloadUrlsRequest(image_ids=[w.image], variant="small")
            ),
        ),
        "WatchImage": (
            Scope.IMAGES_READ,
            "delivery",
            lambda ch, w: _first(delivery(ch).WatchImage(dpb.WatchImageRequest(image_id=w.image))),
        ),
        "BatchGetImages": (
            Scope.IMAGES_READ,
            "delivery",
            lambda ch, w: delivery(ch).BatchGetImages(
                dpb.BatchGetImagesRequest(image_ids=[w.image])
            ),
        ),
        "ListImages": (
            Scope.IMAGES_READ,
            "delivery",
            lambda ch, w: delivery(ch).ListImages(dpb.ListImagesRequest(page_size=1)),
        ),
        "UpdateImage": (
            Scope.IMAGES_CREATE,
            "upload",
            lambda ch, w: upload(ch).UpdateImage(
                upb.UpdateImageRequest(
                    image=image_pb2.Image(image_id=w.image, labels={"team": "feed"}),
                    update_mask=FieldMask(paths=["labels"]),
                )
            ),
        ),
        "CreateProject": (
            Scope.PROJECTS_ADMIN,
            "upload",
            lambda ch, w: projects(ch).CreateProject(
                ppb.CreateProjectRequest(
                    project_id="new-team", project=project_pb2.Project(display_name="New")
                )
            ),
        ),
        "GetProject": (
            Scope.PROJECTS_ADMIN,
            "upload",
            lambda ch, w: projects(ch).GetProject(ppb.GetProjectRequest(name=default)),
        ),
        "UpdateProject": (
            Scope.PROJECTS_ADMIN,
            "upload",
            lambda ch, w: projects(ch).UpdateProject(
                ppb.UpdateProjectRequest(
                    project=project_pb2.Project(name=default, display_name="Renamed"),
                    update_mask=FieldMask(paths=["display_name"]),
                )
            ),
        ),
        "ListProjects": (
            Scope.PROJECTS_ADMIN,
            "upload",
            lambda ch, w: projects(ch).ListProjects(ppb.ListProjectsRequest()),
        ),
        "CreateApiKey": (
            Scope.PROJECTS_ADMIN,
            "upload",
            lambda ch, w: projects(ch).CreateApiKey(
                ppb.CreateApiKeyRequest(
                    parent=default,
                    api_key=project_pb2.ApiKey(display_name="ci", scopes=["images.read"]),
                )
            ),
        ),
        "ListApiKeys": (
            Scope.PROJECTS_ADMIN,
            "upload",
            lambda ch, w: projects(ch).ListApiKeys(ppb.ListApiKeysRequest(parent=default)),
        ),
        "RevokeApiKey": (
            Scope.PROJECTS_ADMIN,
            "upload",
            lambda ch, w: projects(ch).RevokeApiKey(
                ppb.RevokeApiKeyRequest(name=f"{default}/apiKeys/{w.victim_key}")
            ),
        ),
        # Last: they take away what the calls above use.
        "DeleteProject": (
            Scope.PROJECTS_ADMIN,
            "upload",
            lambda ch, w: projects(ch).DeleteProject(
                ppb.DeleteProjectRequest(name=f"projects/{TEAM}")
            ),
        ),
        "UndeleteProject": (
            Scope.PROJECTS_ADMIN,
            "upload",
            lambda ch, w: projects(ch).UndeleteProject(
                ppb.UndeleteProjectRequest(name=f"projects/{TEAM}")
            ),
        ),
        "DeleteImage": (
            Scope.IMAGES_DELETE,
            "upload",
            lambda ch, w: upload(ch).DeleteImage(upb.DeleteImageRequest(image_id=w.image)),
        ),
    }


RPCS = _rpcs()


def test_every_rpc_of_every_service_is_in_the_matrix() -> None:
    from imagery.common.grpc.auth import METHOD_SCOPES

    served = {m.rsplit("/", 1)[1] for m in METHOD_SCOPES}
    assert served == set(RPCS)
    for service in (dpb, upb, ppb):
        for descriptor in service.DESCRIPTOR.services_by_name.values():
            for method in descriptor.methods:
                assert f"/{descriptor.full_name}/{method.name}" in METHOD_SCOPES


async def _call(world: World, rpc: str, header: str | None) -> tuple[str, str, Any]:
    """(code, reason, response) of `rpc` called with this `authorization` header."""
    _, server, call = RPCS[rpc]
    target = world.upload if server == "upload" else world.delivery
    interceptors = [] if header is None else [_Authorization(header), _StreamAuthorization(header)]
    async with grpc.aio.insecure_channel(target, interceptors=interceptors) as channel:  # type: ignore[arg-type]
        try:
            return OK, "", await call(channel, world)
        except grpc.aio.AioRpcError as err:
            return err.code().name, _reason(err), None


class _Authorization(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    """Sends the header exactly as given (tests/grpc_auth.py always sends `Bearer <key>`)."""

    def __init__(self, header: str) -> None:
        self._header = header

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        metadata = grpc.aio.Metadata(("authorization", self._header))
        return await continuation(details._replace(metadata=metadata), request)


class _StreamAuthorization(grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[type-arg]
    """The same for server-streaming calls (a channel takes an interceptor for one kind)."""

    def __init__(self, header: str) -> None:
        self._header = header

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        metadata = grpc.aio.Metadata(("authorization", self._header))
        return await continuation(details._replace(metadata=metadata), request)


async def _first(stream: Any) -> Any:
    """A stream's first message (a READY image's stream has only that one)."""
    async for message in stream:
        return message
    raise AssertionError("the stream ended without a message")


def _reason(err: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    if status is None:
        return ""
    info = error_details_pb2.ErrorInfo()
    for detail in status.details:
        if detail.Unpack(info):
            return str(info.reason)
    return ""


async def _state(pool: asyncpg.Pool) -> tuple[Any, ...]:
    row = await pool.fetchrow(
        """SELECT (SELECT count(*) FROM image_records),
                  (SELECT string_agg(id || display_name || coalesce(deleted_at::text, ''), ',')
                     FROM projects),
                  (SELECT string_agg(id || coalesce(revoked_at::text, ''), ',' ORDER BY id)
                     FROM api_keys),
                  (SELECT count(*) FROM audit_events)"""
    )
    assert row is not None
    return tuple(row)


REFUSED = {
    "none": ("UNAUTHENTICATED", "MISSING_CREDENTIALS"),
    "malformed": ("UNAUTHENTICATED", "INVALID_CREDENTIALS"),
    "unknown": ("UNAUTHENTICATED", "INVALID_CREDENTIALS"),
    "revoked": ("UNAUTHENTICATED", "KEY_REVOKED"),
    "expired": ("UNAUTHENTICATED", "KEY_EXPIRED"),
}


@pytest.mark.parametrize("case", list(REFUSED))
async def test_bad_credentials_are_refused_and_change_nothing(world: World, case: str) -> None:
    code, reason = REFUSED[case]
    for rpc in RPCS:
        before = await _state(world.pool)
        key = None if case == "none" else world.keys[case]
        header = key if case in ("none", "malformed") else f"Bearer {key}"
        got = await _call(world, rpc, header)
        assert got[:2] == (code, reason), f"{rpc} with {case} credentials"
        assert await _state(world.pool) == before, f"{rpc} with {case} credentials changed data"


async def test_a_key_without_the_scope_is_refused_and_changes_nothing(world: World) -> None:
    for rpc, (scope, _, _) in RPCS.items():
        before = await _state(world.pool)
        got = await _call(world, rpc, f"Bearer {world.wrong_scope[scope]}")
        assert got[:2] == ("PERMISSION_DENIED", "MISSING_SCOPE"), rpc
        assert await _state(world.pool) == before, f"{rpc} without its scope changed data"


# Another project's credentials, every scope: the default project's image and the default
# project itself answer exactly like ones that do not exist.
OTHER_PROJECT = {
    "CreateUploadUrl": (OK, ""),  # creates in the caller's own project
    "GetImage": ("NOT_FOUND", "IMAGE_NOT_FOUND"),
    "GetDownloadUrl": ("NOT_FOUND", "IMAGE_NOT_FOUND"),
    "BatchGetDownloadUrls": (OK, ""),
    "WatchImage": ("NOT_FOUND", "IMAGE_NOT_FOUND"),
    "BatchGetImages": (OK, ""),
    "ListImages": (OK, ""),
    "UpdateImage": ("NOT_FOUND", "IMAGE_NOT_FOUND"),
    "CreateProject": ("PERMISSION_DENIED", "MISSING_SCOPE"),
    "GetProject": ("NOT_FOUND", "PROJECT_NOT_FOUND"),
    "UpdateProject": ("NOT_FOUND", "PROJECT_NOT_FOUND"),
    "ListProjects": (OK, ""),
    "CreateApiKey": ("NOT_FOUND", "PROJECT_NOT_FOUND"),
    "ListApiKeys": ("NOT_FOUND", "PROJECT_NOT_FOUND"),
    "RevokeApiKey": ("NOT_FOUND", "API_KEY_NOT_FOUND"),
    "DeleteProject": ("PERMISSION_DENIED", "MISSING_SCOPE"),  # even its own: operators only
    "UndeleteProject": ("PERMISSION_DENIED", "MISSING_SCOPE"),
    "DeleteImage": (OK, ""),
}


async def test_another_projects_things_are_answered_like_unknown_ones(world: World) -> None:
    for rpc in RPCS:
        before = await _state(world.pool)
        code, reason, response = await _call(world, rpc, f"Bearer {world.keys['other project']}")
        assert (code, reason) == OTHER_PROJECT[rpc], rpc
        if rpc == "BatchGetDownloadUrls":
            assert list(response.not_found_image_ids) == [world.image]
            assert not response.download_urls
        if rpc == "DeleteImage":
            assert response.deleted is False
        if rpc == "BatchGetImages":
            assert list(response.not_found_image_ids) == [world.image] and not response.images
        if rpc == "ListImages":
            assert world.image not in {i.image_id for i in response.images}
        if rpc == "ListProjects":
            assert [p.name for p in response.projects] == [f"projects/{TEAM}"]
        if rpc != "CreateUploadUrl":
            assert (await _state(world.pool))[:3] == before[:3], f"{rpc} changed data"
    assert await world.pool.fetchval("SELECT 1 FROM image_records WHERE id = $1", world.image)


async def test_the_right_key_is_served(world: World) -> None:
    for rpc, (scope, _, _) in RPCS.items():
        key = world.keys["admin" if scope is Scope.PROJECTS_ADMIN else "right"]
        code, reason, response = await _call(world, rpc, f"Bearer {key}")
        assert (code, reason) == (OK, ""), f"{rpc}: {code} {reason}"
        if rpc == "DeleteImage":
            assert response.deleted is True
        if rpc == "UndeleteProject":
            assert not response.project.HasField("delete_time"), "restored"
        if rpc == "GetDownloadUrl":
            assert response.url.startswith("https://cdn.example/")
    audited = await world.pool.fetch("SELECT action, principal FROM audit_events ORDER BY id")
    actions = [a for a, _ in audited]
    for expected in (
        "image.create",
        "project.create",
        "project.update",
        "api_key.create",
        "api_key.revoke",
        "project.delete",
        "image.delete",
    ):
        assert expected in actions
    assert all(p.startswith(("key:", "cli:")) for _, p in audited)


async def test_expiry_counts_from_the_call_not_the_cache(world: World) -> None:
    """A key that expires while cached is refused from that moment."""
    projects = PostgresProjects(world.pool)
    made = await projects.create_key(
        DEFAULT_PROJECT,
        Actor("cli:test"),
        display_name="short",
        scopes=[Scope.IMAGES_READ],
        expire_time=datetime.now(UTC) + timedelta(seconds=1),
    )
    assert made is not None
    first = await _call(world, "GetImage", f"Bearer {made[0].secret}")
    assert first[0] == OK
    await asyncio.sleep(1.1)
    assert (await _call(world, "GetImage", f"Bearer {made[0].secret}"))[:2] == (
        "UNAUTHENTICATED",
        "KEY_EXPIRED",
    )
