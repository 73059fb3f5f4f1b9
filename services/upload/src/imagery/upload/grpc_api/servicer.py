"""imagery.v1.UploadService over grpc.aio: map, call one use case, map back."""

from __future__ import annotations

from typing import Any

import grpc

from imagery.common.grpc.auth import current_principal
from imagery.common.grpc.images import image_to_proto
from imagery.common.grpc.server import ServiceRegistration
from imagery.upload.grpc_api.mapping import ticket_to_proto, upload_request
from imagery.upload.use_cases import CreateUploadUrl, DeleteImage, UpdateImage
from imagery.v1 import upload_service_pb2 as pb
from imagery.v1 import upload_service_pb2_grpc as pb_grpc

Context = grpc.aio.ServicerContext[Any, Any]


class UploadServiceServicer(pb_grpc.UploadServiceServicer):
    def __init__(
        self,
        create_upload_url: CreateUploadUrl,
        delete_image: DeleteImage,
        update_image: UpdateImage,
    ) -> None:
        self._create_upload_url = create_upload_url
        self._delete_image = delete_image
        self._update_image = update_image

    async def CreateUploadUrl(  # noqa: N802 (gRPC method name)
        self, request: pb.CreateUploadUrlRequest, context: Context
    ) -> pb.CreateUploadUrlResponse:
        ticket = await self._create_upload_url(current_principal(), upload_request(request))
        return ticket_to_proto(ticket)

    async def DeleteImage(  # noqa: N802 (gRPC method name)
        self, request: pb.DeleteImageRequest, context: Context
    ) -> pb.DeleteImageResponse:
        deleted = await self._delete_image(current_principal(), image_id=request.image_id)
        return pb.DeleteImageResponse(deleted=deleted)

    async def UpdateImage(  # noqa: N802 (gRPC method name)
        self, request: pb.UpdateImageRequest, context: Context
    ) -> pb.UpdateImageResponse:
        record = await self._update_image(
            current_principal(),
            image_id=request.image.image_id,
            update_mask=tuple(request.update_mask.paths),
            labels=dict(request.image.labels),
        )
        return pb.UpdateImageResponse(image=image_to_proto(record))

    def registration(self) -> ServiceRegistration:
        return ServiceRegistration(
            name=pb.DESCRIPTOR.services_by_name["UploadService"].full_name,
            add_to_server=lambda server: pb_grpc.add_UploadServiceServicer_to_server(self, server),
        )
