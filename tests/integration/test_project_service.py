"""ProjectService over a real socket of the real upload server: projects and keys as an
operator and a project admin use them, following the AIPs (resource names, update masks,
page tokens, soft delete), and what a change does to the keys that exist."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp

from imagery.common.config import Settings
from imagery.upload.bootstrap import build_server
from imagery.upload.config import UploadSettings
from imagery.v1 import project_pb2 as pb
from imagery.v1 import project_service_pb2 as ppb
from imagery.v1 import project_service_pb2_grpc as pgrpc
from imagery.v1 import upload_service_pb2 as upb
from imagery.v1 import upload_service_pb2_grpc as ugrpc
from tests import grpc_auth

pytestmark = pytest.mark.integration


@pytest.fixture
async def target(settings: Settings) -> AsyncIterator[str]:
    async with AsyncExitStack() as stack:
        server = await build_server(UploadSettings(settings, 3600), stack)
        port = await server.start(0, host="127.0.0.1")
        yield f"127.0.0.1:{port}"
        await server.stop()


def _stub(target: str, key: str) -> tuple[grpc.aio.Channel, pgrpc.ProjectServiceAsyncStub]:
    channel = grpc_auth.channel(target, key)
    return channel, pgrpc.ProjectServiceStub(channel)


async def _create(
    stub: pgrpc.ProjectServiceAsyncStub, project_id: str, **settings: Any
) -> pb.Project:
    response = await stub.CreateProject(
        ppb.CreateProjectRequest(
            project_id=project_id,
            project=pb.Project(
                display_name=project_id.title(), settings=pb.ProjectSettings(**settings)
            ),
        )
    )
    project: pb.Project = response.project
    return project


async def test_projects_are_created_read_updated_by_mask_and_listed_by_page(
    target: str, keys: dict[str, str]
) -> None:
    channel, stub = _stub(target, keys["IMAGERY_ADMIN_KEY"])
    async with channel:
        made = await _create(stub, "web-team", signed_url_ttl_seconds=86400)
        assert made.name == "projects/web-team" and made.display_name == "Web-Team"
        assert made.effective_settings.signed_url_ttl_seconds == 86400
        assert made.effective_settings.max_upload_bytes == 10 * 1024 * 1024, "the default"
        assert made.HasField("create_time") and not made.HasField("delete_time")

        updated = (
            await stub.UpdateProject(
                ppb.UpdateProjectRequest(
                    project=pb.Project(
                        name="projects/web-team",
                        display_name="ignored: not in the mask",
                        settings=pb.ProjectSettings(max_upload_bytes=2_000_000, min_width=100),
                    ),
                    update_mask=FieldMask(paths=["settings.max_upload_bytes"]),
                )
            )
        ).project
        assert updated.display_name == "Web-Team"
        assert updated.settings.max_upload_bytes == 2_000_000
        assert updated.settings.signed_url_ttl_seconds == 86400, "kept: not in the mask"
        assert not updated.settings.HasField("min_width")

        with pytest.raises(grpc.aio.AioRpcError) as above:
            await stub.UpdateProject(
                ppb.UpdateProjectRequest(
                    project=pb.Project(
                        name="projects/web-team",
                        settings=pb.ProjectSettings(signed_url_ttl_seconds=8 * 86400),
                    ),
                    update_mask=FieldMask(paths=["settings"]),
                )
            )
        assert above.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "ceiling" in (above.value.details() or "")

        for name in ("app-a", "app-b", "app-c"):
            await _create(stub, name)
        with pytest.raises(grpc.aio.AioRpcError) as taken:
            await _create(stub, "app-a")
        assert taken.value.code() is grpc.StatusCode.ALREADY_EXISTS

        names, token = [], ""
        while True:
            page = await stub.ListProjects(ppb.ListProjectsRequest(page_size=2, page_token=token))
            names += [p.name.removeprefix("projects/") for p in page.projects]
            token = page.next_page_token
            if not token:
                break
        assert names == sorted(["app-a", "app-b", "app-c", "default", "operator", "web-team"])
        with pytest.raises(grpc.aio.AioRpcError) as bad_token:
            await stub.ListProjects(ppb.ListProjectsRequest(page_token="garbage"))
        assert bad_token.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_keys_are_shown_once_listed_without_secrets_and_stop_when_revoked_or_deleted(
    target: str, keys: dict[str, str]
) -> None:
    channel, stub = _stub(target, keys["IMAGERY_ADMIN_KEY"])
    async with channel:
        await _create(stub, "mobile")
        expires = Timestamp()
        expires.FromDatetime(datetime.now(UTC) + timedelta(days=30))
        created = await stub.CreateApiKey(
            ppb.CreateApiKeyRequest(
                parent="projects/mobile",
                api_key=pb.ApiKey(
                    display_name="ci",
                    scopes=["images.create", "projects.admin"],
                    expire_time=expires,
                ),
            )
        )
        secret = created.key
        assert secret.startswith("imk_") and created.api_key.name.startswith(
            "projects/mobile/apiKeys/"
        )
        assert created.api_key.creator.startswith("key:")
        listed = await stub.ListApiKeys(ppb.ListApiKeysRequest(parent="projects/mobile"))
        assert [k.name for k in listed.api_keys] == [created.api_key.name]
        assert secret not in str(listed)

        own, own_stub = _stub(target, secret)
        async with own:
            upload = ugrpc.UploadServiceStub(own)
            ticket = await upload.CreateUploadUrl(
                upb.CreateUploadUrlRequest(content_type="image/png", file_name="a.png")
            )
            assert ticket.image_id
            seen = await own_stub.ListProjects(ppb.ListProjectsRequest())
            assert [p.name for p in seen.projects] == ["projects/mobile"], "its own only"

            revoked = await stub.RevokeApiKey(ppb.RevokeApiKeyRequest(name=created.api_key.name))
            assert revoked.api_key.HasField("revoke_time")
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await upload.CreateUploadUrl(
                    upb.CreateUploadUrlRequest(content_type="image/png", file_name="a.png")
                )
            assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED

        other = await stub.CreateApiKey(
            ppb.CreateApiKeyRequest(
                parent="projects/mobile",
                api_key=pb.ApiKey(display_name="app", scopes=["images.create"]),
            )
        )
        deleted = (
            await stub.DeleteProject(ppb.DeleteProjectRequest(name="projects/mobile"))
        ).project
        assert deleted.HasField("delete_time") and deleted.HasField("purge_time")
        again = (await stub.DeleteProject(ppb.DeleteProjectRequest(name="projects/mobile"))).project
        assert again.delete_time == deleted.delete_time, "deleting twice changes nothing"
        app, _ = _stub(target, other.key)
        async with app:
            with pytest.raises(grpc.aio.AioRpcError) as gone:
                await ugrpc.UploadServiceStub(app).CreateUploadUrl(
                    upb.CreateUploadUrlRequest(content_type="image/png", file_name="a.png")
                )
            assert gone.value.code() is grpc.StatusCode.UNAUTHENTICATED
            assert "deleted" in (gone.value.details() or "")
        remaining = await stub.ListProjects(ppb.ListProjectsRequest())
        assert "projects/mobile" not in [p.name for p in remaining.projects]
        shown = await stub.ListProjects(ppb.ListProjectsRequest(show_deleted=True))
        assert "projects/mobile" in [p.name for p in shown.projects]
        with pytest.raises(grpc.aio.AioRpcError) as operator:
            await stub.DeleteProject(ppb.DeleteProjectRequest(name="projects/operator"))
        assert operator.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        restored = (
            await stub.UndeleteProject(ppb.UndeleteProjectRequest(name="projects/mobile"))
        ).project
        assert not restored.HasField("delete_time") and not restored.HasField("purge_time")
        async with grpc_auth.channel(target, other.key) as back:
            ticket = await ugrpc.UploadServiceStub(back).CreateUploadUrl(
                upb.CreateUploadUrlRequest(content_type="image/png", file_name="a.png")
            )
            assert ticket.image_id, "its keys work again"


async def test_a_project_admin_runs_its_project_but_not_its_quotas_or_its_deletion(
    target: str, keys: dict[str, str]
) -> None:
    channel, stub = _stub(target, keys["IMAGERY_ADMIN_KEY"])
    async with channel:
        await _create(stub, "shop", quota_images=1000)
        made = await stub.CreateApiKey(
            ppb.CreateApiKeyRequest(
                parent="projects/shop",
                api_key=pb.ApiKey(display_name="admin", scopes=["projects.admin"]),
            )
        )
    own, own_stub = _stub(target, made.key)
    async with own:
        renamed = await own_stub.UpdateProject(
            ppb.UpdateProjectRequest(
                project=pb.Project(
                    name="projects/shop",
                    display_name="Shop",
                    settings=pb.ProjectSettings(signed_url_ttl_seconds=3600),
                )
            )
        )  # no mask: the fields the request sets
        assert renamed.project.display_name == "Shop"
        assert renamed.project.settings.signed_url_ttl_seconds == 3600
        for forbidden in (
            own_stub.UpdateProject(
                ppb.UpdateProjectRequest(
                    project=pb.Project(
                        name="projects/shop", settings=pb.ProjectSettings(quota_images=0)
                    ),
                    update_mask=FieldMask(paths=["settings.quota_images"]),
                )
            ),
            own_stub.DeleteProject(ppb.DeleteProjectRequest(name="projects/shop")),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await forbidden
            assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
        kept = (await own_stub.GetProject(ppb.GetProjectRequest(name="projects/shop"))).project
        assert kept.settings.quota_images == 1000 and not kept.HasField("delete_time")


async def test_a_variant_profile_is_set_as_a_new_version_and_shown(
    target: str, keys: dict[str, str]
) -> None:
    channel, stub = _stub(target, keys["IMAGERY_ADMIN_KEY"])
    async with channel:
        made = await _create(stub, "profiles")
        default = made.variant_profile
        assert default.version == 0, "a project that chose none has the deployment's, v0"
        assert [p.name for p in default.presets] == [
            "thumbnail",
            "small",
            "medium",
            "large",
            "original",
        ]
        assert default.presets[0].fit == pb.FIT_COVER and default.presets[4].width == 0

        card = pb.VariantPreset(
            name="card", width=300, height=200, fit=pb.FIT_COVER, max_bytes=30_000
        )
        hero = pb.VariantPreset(name="hero", width=1600, height=900, formats=["webp"], lazy=True)
        request = ppb.UpdateProjectRequest(
            project=pb.Project(
                name="projects/profiles",
                variant_profile=pb.VariantProfile(
                    presets=[card, hero], lazy_policy=pb.LAZY_POLICY_PENDING
                ),
            ),
            update_mask=FieldMask(paths=["variant_profile"]),
        )
        first = (await stub.UpdateProject(request)).project.variant_profile
        second = (await stub.UpdateProject(request)).project.variant_profile
        assert (first.version, second.version) == (1, 2), "each change is a new version"
        shown = (await stub.GetProject(ppb.GetProjectRequest(name="projects/profiles"))).project
        assert shown.variant_profile == second
        assert [p.name for p in shown.variant_profile.presets] == ["card", "hero"]
        assert shown.variant_profile.presets[0].max_bytes == 30_000
        assert not shown.variant_profile.presets[0].HasField("quality")
        assert list(shown.variant_profile.presets[0].formats) == ["webp", "jpeg"], "the default"
        assert shown.variant_profile.presets[1].lazy
        assert shown.variant_profile.lazy_policy == pb.LAZY_POLICY_PENDING
        assert shown.variant_profile.HasField("create_time")

        bad = pb.VariantPreset(name="Card", width=300, height=0)
        for preset, field in ((bad, "project.variant_profile.presets[0].name"),):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.UpdateProject(
                    ppb.UpdateProjectRequest(
                        project=pb.Project(
                            name="projects/profiles",
                            variant_profile=pb.VariantProfile(presets=[preset]),
                        ),
                        update_mask=FieldMask(paths=["variant_profile"]),
                    )
                )
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert field in (refused.value.details() or "")
        after = (await stub.GetProject(ppb.GetProjectRequest(name="projects/profiles"))).project
        assert after.variant_profile.version == 2, "a refused profile changes nothing"
