"""`FakeImageryServer`: imagery in your test process, so that code using imagery-client (or
the raw `imagery.v1` stubs) can be tested without imagery's stack.

    with FakeImageryServer() as fake:
        with fake.client() as imagery:          # or fake.async_client(), or your own wiring
            image_id = imagery.upload(png_bytes, "image/png")
            image = imagery.wait_ready(image_id)

It serves UploadService and DeliveryService on one 127.0.0.1 port (plaintext; `address`),
checks API keys and scopes, answers errors with the same codes, ErrorInfo reasons and details
as imagery, takes the upload PUT on a small HTTP endpoint that checks the signed headers as S3
does, and "processes" an upload at once: the format and dimensions are read from the bytes'
header (a well-formed JPEG, PNG, GIF, WebP or AVIF ends READY with imagery's variant sizes; an
empty, unknown or mislabelled one ends FAILED with imagery's reason). Variant URLs serve the
uploaded bytes themselves. A conformance suite in imagery's repository runs the same scenarios
against this fake and the real services.

Script what the real stack would do on its own: `auto_process = False` keeps uploads PENDING
until `process(image_id)`, `mark_processing(image_id)` or `fail(image_id, "CORRUPT")`;
`fail_next_upload("CORRUPT")` fails the next processed upload; `inject_error("GetImage",
"UNAVAILABLE")` makes the next call(s) of an RPC fail (retries, RATE_LIMITED, SERVER_BUSY...),
and `lost_answer=True` lets the call take effect first (a lost answer, retried).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from concurrent import futures
from types import TracebackType
from typing import Any

import grpc

from imagery.client.aio import AsyncImageryClient
from imagery.client.errors import BY_REASON
from imagery.client.sync import ImageryClient
from imagery.client.testing._delivery import Delivery
from imagery.client.testing._http import Storage
from imagery.client.testing._rules import Refusal
from imagery.client.testing._servicers import (
    ALL_SCOPES,
    FakeDeliveryService,
    FakeUploadService,
    Gate,
    Injected,
)
from imagery.client.testing._store import Store
from imagery.v1 import delivery_service_pb2_grpc, image_pb2, upload_service_pb2_grpc

DEFAULT_API_KEY = "imk_fakefakefakefake_fake-key-for-tests"
# What imagery sends with these reasons unless a test says otherwise: its messages, and its
# RetryInfo delays (DependencyUnavailable's, and the default busy_retry_seconds).
_MESSAGES = {
    "DEPENDENCY_UNAVAILABLE": (
        "The image database cannot be reached right now: retry with exponential backoff."
    ),
}
_RETRY_DELAYS = {"DEPENDENCY_UNAVAILABLE": 1.0, "SERVER_BUSY": 0.5}

__all__ = ["DEFAULT_API_KEY", "FakeImageryServer"]


class FakeImageryServer:
    """An in-process imagery. `api_keys` maps each accepted key to its scopes (default: one
    key, `DEFAULT_API_KEY`, with images.create, images.read and images.delete).
    `server_credentials` (`grpc.ssl_server_credentials(...)`) serves TLS instead of plaintext,
    to test a client's TLS or mTLS wiring."""

    def __init__(
        self,
        *,
        api_keys: Mapping[str, Collection[str]] | None = None,
        max_upload_bytes: int = 10 * 1024 * 1024,
        require_declared_upload: bool = False,
        upload_url_expiry_seconds: int = 300,
        signed_url_ttl_seconds: int = 600,
        max_workers: int = 16,
        server_credentials: grpc.ServerCredentials | None = None,
    ) -> None:
        keys = api_keys if api_keys is not None else {DEFAULT_API_KEY: ALL_SCOPES}
        self.api_key = next(iter(keys), DEFAULT_API_KEY)
        self.auto_process = True
        self._store = Store(max_upload_bytes=max_upload_bytes)
        self._store.on_uploaded = self._uploaded
        self._storage = Storage(self._store)
        self._gate = Gate(keys)
        settings = {
            "upload_url_expiry": upload_url_expiry_seconds,
            "require_declared_upload": require_declared_upload,
        }
        base_url = lambda: self._storage.base_url  # noqa: E731
        delivery = Delivery(self._store, base_url, signed_url_ttl_seconds)
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers))
        upload_service_pb2_grpc.add_UploadServiceServicer_to_server(
            FakeUploadService(self._store, self._gate, base_url, settings), self._server
        )
        delivery_service_pb2_grpc.add_DeliveryServiceServicer_to_server(
            FakeDeliveryService(self._store, self._gate, delivery), self._server
        )
        self._tls = server_credentials is not None
        if server_credentials is None:
            self._port = self._server.add_insecure_port("127.0.0.1:0")
        else:
            self._port = self._server.add_secure_port("127.0.0.1:0", server_credentials)
        self._started = False

    @property
    def address(self) -> str:
        """Where both services answer: pass it as the upload and the delivery address."""
        return f"127.0.0.1:{self._port}"

    def start(self) -> FakeImageryServer:
        if not self._started:
            self._storage.start()
            self._server.start()
            self._started = True
        return self

    def stop(self) -> None:
        if self._started:
            self._server.stop(grace=None).wait()
            self._storage.stop()
            self._started = False

    def __enter__(self) -> FakeImageryServer:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()

    def client(self, **overrides: Any) -> ImageryClient:
        """An `ImageryClient` wired to the fake (its API key; plaintext unless the fake serves
        TLS, whose `root_certificates` are then yours to pass)."""
        return ImageryClient(self.address, self.address, **self._client_args(overrides))

    def async_client(self, **overrides: Any) -> AsyncImageryClient:
        """An `AsyncImageryClient` wired to the fake; create it inside your event loop."""
        return AsyncImageryClient(self.address, self.address, **self._client_args(overrides))

    def _client_args(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        return {"api_key": self.api_key, "insecure": not self._tls, **overrides}

    # Scripting what the real stack does on its own ------------------------------------

    def _uploaded(self, image_id: str) -> None:
        if self.auto_process:
            self._store.process(image_id)

    def process(self, image_id: str) -> None:
        """Process the uploaded bytes now (for `auto_process = False`)."""
        self._store.process(image_id)

    def mark_processing(self, image_id: str) -> None:
        """The processor has taken the upload: PROCESSING (WatchImage sends the change)."""
        self._store.mark(image_id, image_pb2.IMAGE_STATUS_PROCESSING)

    def fail(self, image_id: str, reason: str = "CORRUPT") -> None:
        """End a pending or processing image FAILED with `reason` (an ErrorReason name)."""
        self._store.fail(image_id, reason)

    def fail_next_upload(self, reason: str = "CORRUPT") -> None:
        """The next upload processed ends FAILED with `reason`, whatever its bytes."""
        with self._store.lock:
            self._store.next_failures.append(reason)

    def inject_error(
        self,
        method: str,
        reason: str,
        *,
        code: grpc.StatusCode | None = None,
        message: str | None = None,
        retry_delay: float | None = None,
        metadata: Mapping[str, str] | None = None,
        times: int = 1,
        lost_answer: bool = False,
    ) -> None:
        """The next `times` calls of `method` ("GetImage", "CreateUploadUrl", ...) fail with
        `reason`, e.g. "RATE_LIMITED" (with `retry_delay`), "SERVER_BUSY", or "UNAVAILABLE"
        (imagery's answer when its database or storage cannot be reached, which the service
        config retries: DEPENDENCY_UNAVAILABLE with a RetryInfo of 1 s). `code` defaults to
        the reason's status code; `reason=""` with a `code` is a bare status without details,
        as a proxy or a cut connection ends a call. `retry_delay` defaults to imagery's for
        DEPENDENCY_UNAVAILABLE and SERVER_BUSY. `lost_answer=True` (unary RPCs) lets the call
        take effect and then fails it, as when the answer is lost on the way back."""
        if reason == "UNAVAILABLE":
            reason = "DEPENDENCY_UNAVAILABLE"
        if code is None:
            known = BY_REASON.get(reason)
            code = known.code_default if known is not None else None
        if code is None:
            raise ValueError(f"{reason!r} is no reason imagery sends: pass code=")
        if lost_answer and method == "WatchImage":
            raise ValueError("lost_answer=True is for unary RPCs")
        refusal = Refusal(
            code,
            reason,
            message or _MESSAGES.get(reason, "Injected by FakeImageryServer.inject_error."),
            metadata=metadata,
            retry_delay=_RETRY_DELAYS.get(reason) if retry_delay is None else retry_delay,
        )
        self._gate.inject(method, Injected(refusal, times, lost_answer))

    def calls(self, method: str) -> int:
        """How many calls of `method` reached the fake (retries included)."""
        return self._gate.calls.get(method, 0)

    def uploaded_bytes(self, image_id: str) -> bytes | None:
        """The bytes the upload PUT delivered (None before it)."""
        with self._store.lock:
            record = self._store.records.get(image_id)
            return None if record is None else record.body

    def upload_headers(self, image_id: str) -> dict[str, str] | None:
        """The headers of the admitted upload PUT (None before it), as sent."""
        with self._store.lock:
            record = self._store.records.get(image_id)
            return None if record is None or record.put_headers is None else record.put_headers
