"""imagery.v1.DeliveryService over grpc.aio: map, call one use case, map back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc

from imagery.common.grpc.auth import current_principal
from imagery.common.grpc.images import image_to_proto
from imagery.common.grpc.server import ServiceRegistration
from imagery.delivery.grpc_api import mapping
from imagery.delivery.use_cases import BatchGetDownloadUrls, GetDownloadUrl, GetImage
from imagery.v1 import delivery_service_pb2 as pb
from imagery.v1 import delivery_service_pb2_grpc as pb_grpc

Context = grpc.aio.ServicerContext[Any, Any]


@dataclass(frozen=True, slots=True)
class DeliveryUseCases:
    """One use case per RPC."""

    get_image: GetImage
    get_url: GetDownloadUrl
    batch: BatchGetDownloadUrls


class DeliveryServiceServicer(pb_grpc.DeliveryServiceServicer):
    def __init__(self, use_cases: DeliveryUseCases) -> None:
        self._get_image = use_cases.get_image
        self._get_url = use_cases.get_url
        self._batch = use_cases.batch

    async def GetImage(  # noqa: N802 (gRPC method name)
        self, request: pb.GetImageRequest, context: Context
    ) -> pb.GetImageResponse:
        record = await self._get_image(current_principal(), image_id=request.image_id)
        return pb.GetImageResponse(image=image_to_proto(record))

    async def GetDownloadUrl(  # noqa: N802 (gRPC method name)
        self, request: pb.GetDownloadUrlRequest, context: Context
    ) -> pb.GetDownloadUrlResponse:
        url = await self._get_url(
            current_principal(),
            image_id=request.image_id,
            variant=request.variant,
            preference=mapping.PREFERENCE_FROM_PROTO.get(request.format, "webp"),
        )
        return mapping.get_download_url_response(url)

    async def BatchGetDownloadUrls(  # noqa: N802 (gRPC method name)
        self, request: pb.BatchGetDownloadUrlsRequest, context: Context
    ) -> pb.BatchGetDownloadUrlsResponse:
        result = await self._batch(
            current_principal(),
            image_ids=list(request.image_ids),
            variant=request.variant,
            preference=mapping.PREFERENCE_FROM_PROTO.get(request.format, "webp"),
        )
        return mapping.batch_response(result)

    def registration(self) -> ServiceRegistration:
        return ServiceRegistration(
            name=pb.DESCRIPTOR.services_by_name["DeliveryService"].full_name,
            add_to_server=lambda server: pb_grpc.add_DeliveryServiceServicer_to_server(
                self, server
            ),
        )
