"""imagery.v1.DeliveryService over grpc.aio: map, call one use case, map back."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc

from imagery.common.grpc.auth import current_principal
from imagery.common.grpc.images import image_to_proto
from imagery.common.grpc.server import ServiceRegistration
from imagery.delivery.grpc_api import mapping
from imagery.delivery.urls import BatchGetDownloadUrls, GetDownloadUrl
from imagery.delivery.use_cases import BatchGetImages, GetImage, ListImages
from imagery.delivery.watch import WatchImage
from imagery.v1 import delivery_service_pb2 as pb
from imagery.v1 import delivery_service_pb2_grpc as pb_grpc

Context = grpc.aio.ServicerContext[Any, Any]


@dataclass(frozen=True, slots=True)
class DeliveryUseCases:
    """One use case per RPC."""

    get_image: GetImage
    get_url: GetDownloadUrl
    batch: BatchGetDownloadUrls
    batch_get_images: BatchGetImages
    list_images: ListImages
    watch: WatchImage


class DeliveryServiceServicer(pb_grpc.DeliveryServiceServicer):
    def __init__(self, use_cases: DeliveryUseCases) -> None:
        self._get_image = use_cases.get_image
        self._get_url = use_cases.get_url
        self._batch = use_cases.batch
        self._batch_get_images = use_cases.batch_get_images
        self._list_images = use_cases.list_images
        self._watch = use_cases.watch

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
            preference=mapping.preference(request.format),
        )
        return mapping.get_download_url_response(url)

    async def BatchGetDownloadUrls(  # noqa: N802 (gRPC method name)
        self, request: pb.BatchGetDownloadUrlsRequest, context: Context
    ) -> pb.BatchGetDownloadUrlsResponse:
        result = await self._batch(
            current_principal(),
            image_ids=request.image_ids,
            variant=request.variant,
            variants=request.variants,
            preference=mapping.preference(request.format),
        )
        return mapping.batch_response(result)

    async def BatchGetImages(  # noqa: N802 (gRPC method name)
        self, request: pb.BatchGetImagesRequest, context: Context
    ) -> pb.BatchGetImagesResponse:
        result = await self._batch_get_images(current_principal(), image_ids=request.image_ids)
        return mapping.images_response(result)

    async def ListImages(  # noqa: N802 (gRPC method name)
        self, request: pb.ListImagesRequest, context: Context
    ) -> pb.ListImagesResponse:
        page = await self._list_images(
            current_principal(),
            page_size=request.page_size,
            page_token=request.page_token,
            filter=request.filter,
        )
        return mapping.list_response(page)

    async def WatchImage(  # noqa: N802 (gRPC method name)
        self, request: pb.WatchImageRequest, context: Context
    ) -> AsyncIterator[pb.WatchImageResponse]:
        states = self._watch(current_principal(), image_id=request.image_id)
        async with contextlib.aclosing(states):  # its watcher goes when the stream does
            async for record in states:
                yield pb.WatchImageResponse(image=image_to_proto(record))

    def registration(self) -> ServiceRegistration:
        return ServiceRegistration(
            name=pb.DESCRIPTOR.services_by_name["DeliveryService"].full_name,
            add_to_server=lambda server: pb_grpc.add_DeliveryServiceServicer_to_server(
                self, server
            ),
        )
