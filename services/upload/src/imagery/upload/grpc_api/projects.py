"""imagery.v1.ProjectService over grpc.aio: map, call one use case, map back."""

from __future__ import annotations

from typing import Any

import grpc

from imagery.common.grpc.auth import current_principal
from imagery.common.grpc.server import ServiceRegistration
from imagery.upload.grpc_api.mapping import (
    api_key_to_proto,
    key_limits_from_proto,
    project_to_proto,
    requested_profile,
    settings_from_proto,
    timestamp_or_none,
)
from imagery.upload.projects import ProjectAdmin
from imagery.v1 import project_service_pb2 as pb
from imagery.v1 import project_service_pb2_grpc as pb_grpc

Context = grpc.aio.ServicerContext[Any, Any]


class ProjectServiceServicer(pb_grpc.ProjectServiceServicer):
    def __init__(self, admin: ProjectAdmin) -> None:
        self._admin = admin

    def _project(self, project: Any) -> Any:
        return project_to_proto(project, self._admin.policy, self._admin.default_profile)

    async def CreateProject(  # noqa: N802 (gRPC method name)
        self, request: pb.CreateProjectRequest, context: Context
    ) -> pb.CreateProjectResponse:
        project = await self._admin.create_project(
            current_principal(),
            request.project_id,
            request.project.display_name,
            settings_from_proto(request.project.settings),
        )
        return pb.CreateProjectResponse(project=self._project(project))

    async def GetProject(  # noqa: N802 (gRPC method name)
        self, request: pb.GetProjectRequest, context: Context
    ) -> pb.GetProjectResponse:
        project = await self._admin.get_project(current_principal(), request.name)
        return pb.GetProjectResponse(project=self._project(project))

    async def UpdateProject(  # noqa: N802 (gRPC method name)
        self, request: pb.UpdateProjectRequest, context: Context
    ) -> pb.UpdateProjectResponse:
        project = await self._admin.update_project(
            current_principal(),
            request.project.name,
            tuple(request.update_mask.paths),
            request.project.display_name,
            settings_from_proto(request.project.settings),
            requested_profile(request.project),
        )
        return pb.UpdateProjectResponse(project=self._project(project))

    async def ListProjects(  # noqa: N802 (gRPC method name)
        self, request: pb.ListProjectsRequest, context: Context
    ) -> pb.ListProjectsResponse:
        page = await self._admin.list_projects(
            current_principal(), request.page_size, request.page_token, request.show_deleted
        )
        return pb.ListProjectsResponse(
            projects=[self._project(p) for p in page.items],
            next_page_token=page.next_page_token,
        )

    async def DeleteProject(  # noqa: N802 (gRPC method name)
        self, request: pb.DeleteProjectRequest, context: Context
    ) -> pb.DeleteProjectResponse:
        project = await self._admin.delete_project(current_principal(), request.name)
        return pb.DeleteProjectResponse(project=self._project(project))

    async def UndeleteProject(  # noqa: N802 (gRPC method name)
        self, request: pb.UndeleteProjectRequest, context: Context
    ) -> pb.UndeleteProjectResponse:
        project = await self._admin.undelete_project(current_principal(), request.name)
        return pb.UndeleteProjectResponse(project=self._project(project))

    async def CreateApiKey(  # noqa: N802 (gRPC method name)
        self, request: pb.CreateApiKeyRequest, context: Context
    ) -> pb.CreateApiKeyResponse:
        key = request.api_key
        made, info = await self._admin.create_api_key(
            current_principal(),
            request.parent,
            key.display_name,
            tuple(key.scopes),
            timestamp_or_none(key, "expire_time"),
            key_limits_from_proto(key),
        )
        return pb.CreateApiKeyResponse(api_key=api_key_to_proto(info), key=made.secret)

    async def ListApiKeys(  # noqa: N802 (gRPC method name)
        self, request: pb.ListApiKeysRequest, context: Context
    ) -> pb.ListApiKeysResponse:
        page = await self._admin.list_api_keys(
            current_principal(), request.parent, request.page_size, request.page_token
        )
        return pb.ListApiKeysResponse(
            api_keys=[api_key_to_proto(k) for k in page.items],
            next_page_token=page.next_page_token,
        )

    async def RevokeApiKey(  # noqa: N802 (gRPC method name)
        self, request: pb.RevokeApiKeyRequest, context: Context
    ) -> pb.RevokeApiKeyResponse:
        key = await self._admin.revoke_api_key(current_principal(), request.name)
        return pb.RevokeApiKeyResponse(api_key=api_key_to_proto(key))

    def registration(self) -> ServiceRegistration:
        return ServiceRegistration(
            name=pb.DESCRIPTOR.services_by_name["ProjectService"].full_name,
            add_to_server=lambda server: pb_grpc.add_ProjectServiceServicer_to_server(self, server),
        )
