"""`ImageryClient`: imagery from synchronous code (threads, WSGI, scripts)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import grpc

from imagery.client import _upload, results
from imagery.client.channels import ChannelSettings, Pem, sync_channel
from imagery.client.errors import QuotaExceeded, ServerBusy, from_rpc_error
from imagery.client.results import DownloadUrls, Format, ImageBatch
from imagery.v1 import delivery_service_pb2 as dpb
from imagery.v1 import delivery_service_pb2_grpc as dpb_grpc
from imagery.v1 import image_pb2, project_service_pb2_grpc
from imagery.v1 import upload_service_pb2 as upb
from imagery.v1 import upload_service_pb2_grpc as upb_grpc

T = TypeVar("T")
# A WatchImage stream that breaks is opened again: these codes mean "the stream was cut".
REOPEN = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)


class ImageryClient:
    """imagery's UploadService and DeliveryService, with retries and deadlines from the
    default service config, API key or mTLS credentials, and typed exceptions
    (`imagery.client.errors`).

    `upload_address` and `delivery_address` are gRPC targets, e.g.
    `dns:///imagery-upload.imagery.svc.cluster.local:50051` (resolves every pod, and calls are
    spread over them). `api_key` is sent as `authorization: Bearer <key>`. TLS is the default:
    `root_certificates` (PEM bytes or a path; None: the system's roots), and for mTLS
    `private_key` and `certificate_chain`. `insecure=True` talks plaintext, for the local
    stack (127.0.0.1) or a mesh sidecar that adds TLS. `service_config` replaces
    `channels.DEFAULT_SERVICE_CONFIG`; `options` adds gRPC channel arguments (or overrides
    the client's, such as `grpc.max_receive_message_length`). The channels give every
    CreateUploadUrl without a `request_id` a fresh one, the stubs' calls included, so that
    the service config's retries of it answer one image.
    """

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
        self._upload_channel = sync_channel(upload_address, settings)
        self._delivery_channel = (
            self._upload_channel
            if delivery_address == upload_address
            else sync_channel(delivery_address, settings)
        )
        self._upload_timeout = upload_timeout
        # The generated stubs, for anything the methods below do not cover.
        self.upload_stub = upb_grpc.UploadServiceStub(self._upload_channel)
        self.delivery_stub = dpb_grpc.DeliveryServiceStub(self._delivery_channel)
        self.project_stub = project_service_pb2_grpc.ProjectServiceStub(self._upload_channel)

    def __enter__(self) -> ImageryClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._upload_channel.close()
        if self._delivery_channel is not self._upload_channel:
            self._delivery_channel.close()

    def _call(self, method: Callable[..., T], request: Any, timeout: float | None) -> T:
        try:
            return method(request, timeout=timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error

    def upload(
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
        """Upload `source` (bytes, or the path of a file) and return the new image's id.
        The image is PENDING until the processor has verified it: see `wait_ready`.
        `declare` signs the size and SHA-256 into the upload URL, so storage admits these
        bytes only. `limits` (`imagery.v1.upload_service_pb2.UploadLimits`) are stricter
        limits for this upload: outside them it ends FAILED (DIMENSIONS_EXCEEDED); looser than
        the project's raises `InvalidArgument`. Raises `UploadFailed` when storage refuses the
        PUT."""
        payload = _upload.prepare(source, file_name)
        request = _upload.create_request(
            payload,
            content_type,
            labels=labels,
            request_id=request_id,
            declare=declare,
            limits=limits,
        )
        ticket: upb.CreateUploadUrlResponse = self._call(
            self.upload_stub.CreateUploadUrl, request, timeout
        )
        _upload.put(ticket, payload, content_type, timeout=self._upload_timeout)
        return ticket.image_id

    def wait_ready(self, image_id: str, timeout: float = 60.0) -> image_pb2.Image:
        """The image once READY. Raises `ImageFailed` if it ends FAILED, `ImageBlocked` if it
        is taken down, `ImageNotFound` if it is deleted, and `TimeoutError` if it is neither
        within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        last: image_pb2.Image | None = None
        pause = 0.1
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                stream = self.delivery_stub.WatchImage(
                    dpb.WatchImageRequest(image_id=image_id), timeout=remaining
                )
                try:
                    for answer in stream:
                        last = answer.image
                        if results.terminal(last):
                            return last
                finally:
                    stream.cancel()  # type: ignore[no-untyped-call]
            except grpc.RpcError as error:
                code: grpc.StatusCode = error.code()
                if code is grpc.StatusCode.DEADLINE_EXCEEDED:
                    break
                if code is grpc.StatusCode.UNIMPLEMENTED:  # a server older than WatchImage
                    return self._poll_ready(image_id, deadline)
                failure = from_rpc_error(error)
                if isinstance(failure, QuotaExceeded):  # the project holds its share of streams
                    return self._poll_ready(image_id, deadline)
                if code not in REOPEN and not isinstance(failure, ServerBusy):
                    raise failure from error
                pause = failure.retry_delay or pause
            time.sleep(max(0.0, min(pause, deadline - time.monotonic())))
            pause = min(pause * 2, 2.0)
        raise TimeoutError(
            f"image {image_id} was not ready within {timeout:g} s "
            f"(last seen {results.status_name(last)})"
        )

    def _poll_ready(self, image_id: str, deadline: float) -> image_pb2.Image:
        pause, image = 0.2, None
        while (remaining := deadline - time.monotonic()) > 0:
            image = self.get_image(image_id, timeout=remaining)
            if results.terminal(image):
                return image
            time.sleep(max(0.0, min(pause, deadline - time.monotonic())))
            pause = min(pause * 1.5, 1.0)
        raise TimeoutError(
            f"image {image_id} was not ready in time (last seen {results.status_name(image)})"
        )

    def get_image(self, image_id: str, *, timeout: float | None = None) -> image_pb2.Image:
        request = dpb.GetImageRequest(image_id=image_id)
        answer: dpb.GetImageResponse = self._call(self.delivery_stub.GetImage, request, timeout)
        return answer.image

    def download_url(
        self,
        image_id: str,
        variant: str,
        *,
        format: Format | None = None,
        timeout: float | None = None,
    ) -> str:
        """One signed URL. Raises `ImageNotReady` for an image that is not READY, a FAILED one
        included (`metadata["status"]` is "failed"), `ImageNotFound`, `UnknownVariant`, and
        `ImageContentLost` when the variants' objects are gone."""
        request = results.download_url_request(image_id, variant, format)
        answer: dpb.GetDownloadUrlResponse = self._call(
            self.delivery_stub.GetDownloadUrl, request, timeout
        )
        return answer.url

    def download_urls(
        self,
        image_ids: Iterable[str],
        variants: str | Sequence[str],
        *,
        format: Format | None = None,
        timeout: float | None = None,
    ) -> DownloadUrls:
        """Signed URLs for every image and variant that has one (`urls[id][variant]`); the
        rest are in `.failures` with their reason. Any number of ids, 50 per call."""
        requests = results.download_requests(image_ids, variants, format)
        method = self.delivery_stub.BatchGetDownloadUrls
        return results.fold_download_urls(self._call(method, r, timeout) for r in requests)

    def batch_get_images(
        self, image_ids: Iterable[str], *, timeout: float | None = None
    ) -> ImageBatch:
        """The images (in request order) and the ids that name none; 100 per call."""
        requests = results.image_requests(image_ids)
        method = self.delivery_stub.BatchGetImages
        return results.fold_images(self._call(method, r, timeout) for r in requests)

    def list_images(
        self, *, filter: str = "", page_size: int = 0, timeout: float | None = None
    ) -> Iterator[image_pb2.Image]:
        """The project's images, newest first, fetched a page at a time as iterated.
        `filter` is AIP-160: `status = READY AND labels.team = "feed"`."""
        token = ""
        while True:
            request = dpb.ListImagesRequest(filter=filter, page_size=page_size, page_token=token)
            page: dpb.ListImagesResponse = self._call(
                self.delivery_stub.ListImages, request, timeout
            )
            yield from page.images
            token = page.next_page_token
            if not token:
                return

    def update_labels(
        self, image_id: str, labels: Mapping[str, str], *, timeout: float | None = None
    ) -> image_pb2.Image:
        """Replace the image's labels with `labels`; returns the image as it now is."""
        request = results.labels_request(image_id, labels)
        answer: upb.UpdateImageResponse = self._call(self.upload_stub.UpdateImage, request, timeout)
        return answer.image

    def delete_image(self, image_id: str, *, timeout: float | None = None) -> bool:
        """True when this call removed the image, False when there was none to remove."""
        request = upb.DeleteImageRequest(image_id=image_id)
        answer: upb.DeleteImageResponse = self._call(self.upload_stub.DeleteImage, request, timeout)
        return answer.deleted
