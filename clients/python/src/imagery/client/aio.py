"""`AsyncImageryClient`: `ImageryClient` for asyncio code, on grpc.aio. Create it inside the
event loop that will use it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import grpc
import grpc.aio

from imagery.client import _upload, results
from imagery.client.channels import ChannelSettings, Pem, aio_channel
from imagery.client.errors import QuotaExceeded, ServerBusy, from_rpc_error
from imagery.client.results import DownloadUrls, Format, ImageBatch
from imagery.client.sync import REOPEN
from imagery.v1 import delivery_service_pb2 as dpb
from imagery.v1 import delivery_service_pb2_grpc as dpb_grpc
from imagery.v1 import image_pb2, project_service_pb2_grpc
from imagery.v1 import upload_service_pb2 as upb
from imagery.v1 import upload_service_pb2_grpc as upb_grpc

T = TypeVar("T")


class AsyncImageryClient:
    """The same methods and arguments as `ImageryClient`, awaited; `list_images` is an async
    iterator. The stubs (`upload_stub`, `delivery_stub`, `project_stub`) are grpc.aio's."""

    def __init__(
        self,
        upload_address: str,
        delivery_address: str,
        *,
        api_key: str | None = None,
        insecure: bool = False,
        root_certificates: Pem | None = None,
        private_key: Pem | None = None,
        certificate_chain: Pem | None = None,
        service_config: Mapping[str, Any] | None = None,
        options: Sequence[tuple[str, Any]] = (),
        upload_timeout: float = 120.0,
    ) -> None:
        settings = ChannelSettings(
            api_key,
            insecure,
            root_certificates,
            private_key,
            certificate_chain,
            service_config,
            options,
        )
        self._upload_channel = aio_channel(upload_address, settings)
        self._delivery_channel = (
            self._upload_channel
            if delivery_address == upload_address
            else aio_channel(delivery_address, settings)
        )
        self._upload_timeout = upload_timeout
        self.upload_stub = upb_grpc.UploadServiceStub(self._upload_channel)
        self.delivery_stub = dpb_grpc.DeliveryServiceStub(self._delivery_channel)
        self.project_stub = project_service_pb2_grpc.ProjectServiceStub(self._upload_channel)

    async def __aenter__(self) -> AsyncImageryClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._upload_channel.close(None)
        if self._delivery_channel is not self._upload_channel:
            await self._delivery_channel.close(None)

    async def _call(
        self, method: Callable[..., Awaitable[T]], request: Any, timeout: float | None
    ) -> T:
        try:
            return await method(request, timeout=timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error

    async def upload(
        self,
        source: _upload.Source,
        content_type: str,
        *,
        file_name: str | None = None,
        labels: Mapping[str, str] | None = None,
        request_id: str | None = None,
        declare: bool = True,
        timeout: float | None = None,
        limits: upb.UploadLimits | None = None,
    ) -> str:
        """See `ImageryClient.upload`; hashing and the PUT run in a worker thread."""
        payload = await asyncio.to_thread(_upload.prepare, source, file_name)
        request = _upload.create_request(
            payload,
            content_type,
            labels=labels,
            request_id=request_id,
            declare=declare,
            limits=limits,
        )
        ticket: upb.CreateUploadUrlResponse = await self._call(
            self.upload_stub.CreateUploadUrl, request, timeout
        )
        await asyncio.to_thread(
            _upload.put, ticket, payload, content_type, timeout=self._upload_timeout
        )
        return ticket.image_id

    async def wait_ready(self, image_id: str, timeout: float = 60.0) -> image_pb2.Image:
        """See `ImageryClient.wait_ready`."""
        deadline = time.monotonic() + timeout
        last: image_pb2.Image | None = None
        pause = 0.1
        while (remaining := deadline - time.monotonic()) > 0:
            call = self.delivery_stub.WatchImage(
                dpb.WatchImageRequest(image_id=image_id), timeout=remaining
            )
            try:
                async for answer in call:
                    last = answer.image
                    if results.terminal(last):
                        return last
            except grpc.RpcError as error:
                code: grpc.StatusCode = error.code()
                if code is grpc.StatusCode.DEADLINE_EXCEEDED:
                    break
                if code is grpc.StatusCode.UNIMPLEMENTED:  # a server older than WatchImage
                    return await self._poll_ready(image_id, deadline)
                failure = from_rpc_error(error)
                if isinstance(failure, QuotaExceeded):  # the project holds its share of streams
                    return await self._poll_ready(image_id, deadline)
                if code not in REOPEN and not isinstance(failure, ServerBusy):
                    raise failure from error
                pause = failure.retry_delay or pause
            finally:
                call.cancel()
            await asyncio.sleep(max(0.0, min(pause, deadline - time.monotonic())))
            pause = min(pause * 2, 2.0)
        raise TimeoutError(
            f"image {image_id} was not ready within {timeout:g} s "
            f"(last seen {results.status_name(last)})"
        )

    async def _poll_ready(self, image_id: str, deadline: float) -> image_pb2.Image:
        pause, image = 0.2, None
        while (remaining := deadline - time.monotonic()) > 0:
            image = await self.get_image(image_id, timeout=remaining)
            if results.terminal(image):
                return image
            await asyncio.sleep(max(0.0, min(pause, deadline - time.monotonic())))
            pause = min(pause * 1.5, 1.0)
        raise TimeoutError(
            f"image {image_id} was not ready in time (last seen {results.status_name(image)})"
        )

    async def get_image(self, image_id: str, *, timeout: float | None = None) -> image_pb2.Image:
        request = dpb.GetImageRequest(image_id=image_id)
        answer: dpb.GetImageResponse = await self._call(
            self.delivery_stub.GetImage, request, timeout
        )
        return answer.image

    async def download_url(
        self,
        image_id: str,
        variant: str,
        *,
        format: Format | None = None,
        timeout: float | None = None,
    ) -> str:
        """See `ImageryClient.download_url`: a FAILED image raises `ImageNotReady` too."""
        request = results.download_url_request(image_id, variant, format)
        answer: dpb.GetDownloadUrlResponse = await self._call(
            self.delivery_stub.GetDownloadUrl, request, timeout
        )
        return answer.url

    async def download_urls(
        self,
        image_ids: Iterable[str],
        variants: str | Sequence[str],
        *,
        format: Format | None = None,
        timeout: float | None = None,
    ) -> DownloadUrls:
        requests = results.download_requests(image_ids, variants, format)
        method = self.delivery_stub.BatchGetDownloadUrls
        answers = await asyncio.gather(*(self._call(method, r, timeout) for r in requests))
        return results.fold_download_urls(answers)

    async def batch_get_images(
        self, image_ids: Iterable[str], *, timeout: float | None = None
    ) -> ImageBatch:
        requests = results.image_requests(image_ids)
        method = self.delivery_stub.BatchGetImages
        answers = await asyncio.gather(*(self._call(method, r, timeout) for r in requests))
        return results.fold_images(answers)

    async def list_images(
        self, *, filter: str = "", page_size: int = 0, timeout: float | None = None
    ) -> AsyncIterator[image_pb2.Image]:
        token = ""
        while True:
            request = dpb.ListImagesRequest(filter=filter, page_size=page_size, page_token=token)
            page: dpb.ListImagesResponse = await self._call(
                self.delivery_stub.ListImages, request, timeout
            )
            for image in page.images:
                yield image
            token = page.next_page_token
            if not token:
                return

    async def update_labels(
        self, image_id: str, labels: Mapping[str, str], *, timeout: float | None = None
    ) -> image_pb2.Image:
        request = results.labels_request(image_id, labels)
        answer: upb.UpdateImageResponse = await self._call(
            self.upload_stub.UpdateImage, request, timeout
        )
        return answer.image

    async def delete_image(self, image_id: str, *, timeout: float | None = None) -> bool:
        request = upb.DeleteImageRequest(image_id=image_id)
        answer: upb.DeleteImageResponse = await self._call(
            self.upload_stub.DeleteImage, request, timeout
        )
        return answer.deleted
