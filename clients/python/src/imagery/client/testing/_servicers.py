"""The fake's UploadService and DeliveryService (grpc's synchronous server, so that the fake
runs beside sync and asyncio code alike): credentials, injected errors, and refusals sent as
imagery sends them, a `google.rpc.Status` with ErrorInfo and its companions."""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from imagery.client.testing._delivery import Delivery
from imagery.client.testing._rules import Refusal
from imagery.client.testing._store import Store
from imagery.v1 import delivery_service_pb2 as dpb
from imagery.v1 import delivery_service_pb2_grpc as dpb_grpc
from imagery.v1 import upload_service_pb2 as upb
from imagery.v1 import upload_service_pb2_grpc as upb_grpc

T = TypeVar("T")
SCOPES = {
    "CreateUploadUrl": "images.create",
    "DeleteImage": "images.delete",
    "UpdateImage": "images.create",
}
ALL_SCOPES = frozenset({"images.create", "images.read", "images.delete"})


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def abort(context: grpc.ServicerContext, refusal: Refusal) -> None:
    """End the call as imagery would: code, message, and the details in the trailer (none for
    a refusal without a reason: a bare status, as a proxy or a cut connection ends a call)."""
    if not (refusal.reason or refusal.retry_delay is not None or refusal.violations):
        context.abort(refusal.code, refusal.message)
    details = [
        _pack(
            error_details_pb2.ErrorInfo(
                reason=refusal.reason, domain="imagery", metadata=refusal.metadata
            )
        )
    ]
    if refusal.retry_delay is not None:
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(round(refusal.retry_delay * 1000))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    if refusal.violations:
        violations = [
            error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
            for f, d in refusal.violations
        ]
        details.append(_pack(error_details_pb2.BadRequest(field_violations=violations)))
    status = status_pb2.Status(code=refusal.code.value[0], message=refusal.message, details=details)
    context.set_trailing_metadata((("grpc-status-details-bin", status.SerializeToString()),))
    context.abort(refusal.code, refusal.message)


@dataclass
class Injected:
    refusal: Refusal
    times: int
    lost_answer: bool = False  # the call takes effect, then its caller gets the refusal


class Gate:
    """Who may call (API keys and their scopes), and errors a test asked for."""

    def __init__(self, api_keys: Mapping[str, Collection[str]]) -> None:
        self.api_keys = dict(api_keys)
        self.injected: dict[str, list[Injected]] = {}
        self.lost: dict[str, list[Injected]] = {}  # answers to lose, once the call took effect
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()

    def inject(self, method: str, injected: Injected) -> None:
        with self._lock:
            queues = self.lost if injected.lost_answer else self.injected
            queues.setdefault(method, []).append(injected)

    def _next(self, queue: list[Injected]) -> Refusal | None:
        if not queue:
            return None
        queue[0].times -= 1
        refusal = queue[0].refusal
        if queue[0].times <= 0:
            queue.pop(0)
        return refusal

    def lose_answer(self, method: str) -> None:
        """Raises the refusal of a lost answer the test asked for, if any."""
        with self._lock:
            refusal = self._next(self.lost.get(method, []))
        if refusal is not None:
            raise refusal

    def check(self, method: str, context: grpc.ServicerContext) -> None:
        with self._lock:
            self.calls[method] = self.calls.get(method, 0) + 1
            refusal = self._next(self.injected.get(method, []))
        if refusal is not None:
            raise refusal
        header = dict(context.invocation_metadata()).get("authorization")
        if header is None:
            raise Refusal(
                grpc.StatusCode.UNAUTHENTICATED,
                "MISSING_CREDENTIALS",
                "The call carries no credentials: send `authorization: Bearer <api key>`.",
            )
        scheme, _, key = str(header).strip().partition(" ")
        scopes = self.api_keys.get(key.strip()) if scheme.lower() == "bearer" else None
        if scopes is None:
            raise Refusal(
                grpc.StatusCode.UNAUTHENTICATED,
                "INVALID_CREDENTIALS",
                "The credentials are not an API key of this (fake) imagery.",
            )
        scope = SCOPES.get(method, "images.read")
        if scope not in scopes:
            raise Refusal(
                grpc.StatusCode.PERMISSION_DENIED,
                "MISSING_SCOPE",
                f"{method} needs the scope {scope!r}, which these credentials lack.",
                metadata={"scope": scope, "method": method},
            )


def _serve(gate: Gate, method: str, context: grpc.ServicerContext, answer: Callable[[], T]) -> T:
    try:
        gate.check(method, context)
        result = answer()
        gate.lose_answer(method)
        return result
    except Refusal as refusal:
        abort(context, refusal)
        raise AssertionError("unreachable") from None  # abort raises


class FakeUploadService(upb_grpc.UploadServiceServicer):
    def __init__(
        self, store: Store, gate: Gate, base_url: Callable[[], str], settings: dict[str, Any]
    ) -> None:
        self._store = store
        self._gate = gate
        self._base_url = base_url
        self._settings = settings

    def CreateUploadUrl(  # noqa: N802 (gRPC method name)
        self, request: upb.CreateUploadUrlRequest, context: grpc.ServicerContext
    ) -> upb.CreateUploadUrlResponse:
        return _serve(
            self._gate,
            "CreateUploadUrl",
            context,
            lambda: self._store.ticket(
                request,
                self._base_url(),
                self._settings["upload_url_expiry"],
                self._settings["require_declared_upload"],
            ),
        )

    def DeleteImage(  # noqa: N802 (gRPC method name)
        self, request: upb.DeleteImageRequest, context: grpc.ServicerContext
    ) -> upb.DeleteImageResponse:
        return _serve(
            self._gate,
            "DeleteImage",
            context,
            lambda: upb.DeleteImageResponse(deleted=self._store.delete(request.image_id)),
        )

    def UpdateImage(  # noqa: N802 (gRPC method name)
        self, request: upb.UpdateImageRequest, context: grpc.ServicerContext
    ) -> upb.UpdateImageResponse:
        return _serve(
            self._gate,
            "UpdateImage",
            context,
            lambda: upb.UpdateImageResponse(
                image=self._store.relabel(
                    request.image.image_id, list(request.update_mask.paths), request.image.labels
                )
            ),
        )


class FakeDeliveryService(dpb_grpc.DeliveryServiceServicer):
    def __init__(self, store: Store, gate: Gate, delivery: Delivery) -> None:
        self._store = store
        self._gate = gate
        self._delivery = delivery

    def GetImage(  # noqa: N802 (gRPC method name)
        self, request: dpb.GetImageRequest, context: grpc.ServicerContext
    ) -> dpb.GetImageResponse:
        return _serve(
            self._gate,
            "GetImage",
            context,
            lambda: dpb.GetImageResponse(image=self._store.get(request.image_id)),
        )

    def GetDownloadUrl(  # noqa: N802 (gRPC method name)
        self, request: dpb.GetDownloadUrlRequest, context: grpc.ServicerContext
    ) -> dpb.GetDownloadUrlResponse:
        answer = lambda: self._delivery.download_url(request)  # noqa: E731
        return _serve(self._gate, "GetDownloadUrl", context, answer)

    def BatchGetDownloadUrls(  # noqa: N802 (gRPC method name)
        self, request: dpb.BatchGetDownloadUrlsRequest, context: grpc.ServicerContext
    ) -> dpb.BatchGetDownloadUrlsResponse:
        answer = lambda: self._delivery.download_urls(request)  # noqa: E731
        return _serve(self._gate, "BatchGetDownloadUrls", context, answer)

    def BatchGetImages(  # noqa: N802 (gRPC method name)
        self, request: dpb.BatchGetImagesRequest, context: grpc.ServicerContext
    ) -> dpb.BatchGetImagesResponse:
        answer = lambda: self._delivery.images(request)  # noqa: E731
        return _serve(self._gate, "BatchGetImages", context, answer)

    def ListImages(  # noqa: N802 (gRPC method name)
        self, request: dpb.ListImagesRequest, context: grpc.ServicerContext
    ) -> dpb.ListImagesResponse:
        answer = lambda: self._delivery.list(request)  # noqa: E731
        return _serve(self._gate, "ListImages", context, answer)

    def WatchImage(  # noqa: N802 (gRPC method name)
        self, request: dpb.WatchImageRequest, context: grpc.ServicerContext
    ) -> Iterator[dpb.WatchImageResponse]:
        try:
            self._gate.check("WatchImage", context)
            for image in self._store.watch(request.image_id, context.is_active):
                yield dpb.WatchImageResponse(image=image)
        except Refusal as refusal:
            abort(context, refusal)
