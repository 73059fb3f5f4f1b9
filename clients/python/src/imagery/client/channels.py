"""Channels to imagery: the default service config (round_robin, retries, deadlines), the
credentials (an API key as call credentials, TLS or mTLS, or plaintext for a local stack), and
the interceptor that gives every CreateUploadUrl a request id, so that retrying it is safe."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

from imagery.client._version import __version__

UPLOAD = "imagery.v1.UploadService"
DELIVERY = "imagery.v1.DeliveryService"

CREATE_UPLOAD_URL = f"/{UPLOAD}/CreateUploadUrl"
# A ListImages page holds up to 1000 images, each with up to 64 labels of 63-character keys
# and values and a 255-character file name: far past gRPC's default 4 MiB receive limit.
# tests/unit/test_client_requests.py computes the largest page from imagery's limits and
# checks that it fits here with room for more variant presets.
MAX_RECEIVE_MESSAGE_BYTES = 32 * 1024 * 1024

# Retried on UNAVAILABLE only: the server, or Postgres/S3 behind it, could not answer. Each
# method listed is safe to repeat: reads, DeleteImage (deleting twice answers deleted=false),
# UpdateImage (sets the labels to the same value), and CreateUploadUrl, because the client's
# channels fill in a fresh `request_id` when a call carries none (`SyncRequestId`,
# `AioRequestId`), before gRPC retries it: every attempt carries the same id, and imagery
# answers a repeat with the first attempt's image instead of creating a second one. A channel
# of your own with this config must do the same (add the interceptor, or set request_id).
# gRPC never retries once a response has started arriving, so a WatchImage stream is retried
# only until it opens; `wait_ready` reopens a stream that breaks later.
_RETRY = {
    "maxAttempts": 5,
    "initialBackoff": "0.2s",
    "maxBackoff": "5s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}


def _names(service: str, *methods: str) -> list[dict[str, str]]:
    return [{"service": service, "method": m} for m in methods]


# The default service config. If you build your own channel with it, send a `request_id`
# with every CreateUploadUrl (or install `SyncRequestId` / `AioRequestId`): its retries of a
# call without one could each create an image.
DEFAULT_SERVICE_CONFIG: dict[str, Any] = {
    # The Services are headless: resolve every pod (dns:///host:port) and spread the calls.
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [
        {
            "name": _names(DELIVERY, "GetImage", "GetDownloadUrl", "BatchGetImages"),
            "timeout": "5s",
            "retryPolicy": _RETRY,
        },
        {
            "name": _names(DELIVERY, "BatchGetDownloadUrls", "ListImages"),
            "timeout": "10s",
            "retryPolicy": _RETRY,
        },
        {
            "name": _names(UPLOAD, "CreateUploadUrl", "DeleteImage", "UpdateImage"),
            "timeout": "10s",
            "retryPolicy": _RETRY,
        },
        # No deadline: a watch lasts as long as its caller's own timeout.
        {"name": _names(DELIVERY, "WatchImage"), "retryPolicy": _RETRY},
    ],
    # Past 50 failures more than successes, stop retrying until the service recovers: retries
    # must not multiply the load of an outage.
    "retryThrottling": {"maxTokens": 100, "tokenRatio": 0.1},
}

Pem = bytes | str | os.PathLike[str]

if TYPE_CHECKING:  # generic in grpc-stubs only, not at run time
    _SyncUnaryUnary = grpc.UnaryUnaryClientInterceptor[Any, Any]
    _SyncUnaryStream = grpc.UnaryStreamClientInterceptor[Any, Any]
    _AioUnaryUnary = grpc.aio.UnaryUnaryClientInterceptor[Any, Any]
    _AioUnaryStream = grpc.aio.UnaryStreamClientInterceptor[Any, Any]
else:
    _SyncUnaryUnary = grpc.UnaryUnaryClientInterceptor
    _SyncUnaryStream = grpc.UnaryStreamClientInterceptor
    _AioUnaryUnary = grpc.aio.UnaryUnaryClientInterceptor
    _AioUnaryStream = grpc.aio.UnaryStreamClientInterceptor


def _pem(value: Pem | None) -> bytes | None:
    """PEM bytes as given, or read from a path."""
    if value is None or isinstance(value, bytes):
        return value
    return Path(value).read_bytes()


@dataclass(frozen=True)
class ChannelSettings:
    """How to reach imagery; see `ImageryClient` for the meaning of each field."""

    api_key: str | None = None
    insecure: bool = False
    root_certificates: Pem | None = None
    private_key: Pem | None = None
    certificate_chain: Pem | None = None
    service_config: Mapping[str, Any] | None = None
    options: Sequence[tuple[str, Any]] = ()

    def __post_init__(self) -> None:
        tls = (self.root_certificates, self.private_key, self.certificate_chain)
        if self.insecure and any(v is not None for v in tls):
            raise ValueError("insecure=True sends plaintext: leave out the TLS certificates")
        if (self.private_key is None) != (self.certificate_chain is None):
            raise ValueError("mTLS needs both private_key and certificate_chain")
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("api_key is empty")

    def channel_options(self) -> list[tuple[str, Any]]:
        """The channel arguments: the service config, retries, a receive limit that holds a
        full ListImages page, and `options` over them."""
        config = DEFAULT_SERVICE_CONFIG if self.service_config is None else self.service_config
        options: dict[str, Any] = {
            "grpc.service_config": json.dumps(config),
            "grpc.enable_retries": 1,
            "grpc.max_receive_message_length": MAX_RECEIVE_MESSAGE_BYTES,
            "grpc.primary_user_agent": f"imagery-client/{__version__}",
        }
        options.update(self.options)
        return list(options.items())

    def credentials(self) -> grpc.ChannelCredentials | None:
        """TLS (with a client certificate for mTLS) and the API key as call credentials; None
        for a plaintext channel, whose key an interceptor sends instead (gRPC sends call
        credentials only over TLS)."""
        if self.insecure:
            return None
        credentials = grpc.ssl_channel_credentials(
            _pem(self.root_certificates), _pem(self.private_key), _pem(self.certificate_chain)
        )
        if self.api_key is None:
            return credentials
        return grpc.composite_channel_credentials(
            credentials, grpc.access_token_call_credentials(self.api_key.strip())
        )

    def plaintext_metadata(self) -> tuple[str, str] | None:
        """The `authorization` pair a plaintext channel adds to every call."""
        if self.insecure and self.api_key is not None:
            return ("authorization", f"Bearer {self.api_key.strip()}")
        return None


class _SyncDetails(grpc.ClientCallDetails):
    def __init__(self, base: Any, metadata: tuple[tuple[str, str | bytes], ...]) -> None:
        self.method = base.method
        self.timeout = base.timeout
        self.metadata = metadata
        self.credentials = base.credentials
        self.wait_for_ready = base.wait_for_ready
        self.compression = getattr(base, "compression", None)


def with_metadata(details: Any, pair: tuple[str, str]) -> Any:
    """`details` (sync or aio ClientCallDetails) with `pair` added to its metadata."""
    metadata = (*(details.metadata or ()), pair)
    if hasattr(details, "_replace"):  # grpc.aio.ClientCallDetails is a namedtuple
        return details._replace(metadata=grpc.aio.Metadata(*metadata))
    return _SyncDetails(details, metadata)


class SyncApiKey(_SyncUnaryUnary, _SyncUnaryStream):
    """Sends the API key on a plaintext channel (the local stack, or a mesh sidecar that
    adds TLS on the way)."""

    def __init__(self, pair: tuple[str, str]) -> None:
        self._pair = pair

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        return continuation(with_metadata(client_call_details, self._pair), request)

    def intercept_unary_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        return continuation(with_metadata(client_call_details, self._pair), request)


def with_request_id(method: str | bytes, request: Any) -> Any:
    """`request` as sent: a CreateUploadUrlRequest without a request id gets a copy with a
    fresh UUID4 in it (the caller's message is left as it was); anything else as it is."""
    name = method.decode() if isinstance(method, bytes) else method
    if name != CREATE_UPLOAD_URL or request.request_id:
        return request
    filled = type(request)()
    filled.CopyFrom(request)
    filled.request_id = str(uuid.uuid4())
    return filled


class SyncRequestId(_SyncUnaryUnary):
    """Gives a CreateUploadUrl call without a `request_id` a fresh one, once per call: gRPC's
    retries (below interceptors) resend the same message, so imagery answers them with the
    image the first attempt created. The client's channels carry it; add it to a channel of
    your own with `grpc.intercept_channel(channel, SyncRequestId())`."""

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        return continuation(
            client_call_details, with_request_id(client_call_details.method, request)
        )


def sync_channel(target: str, settings: ChannelSettings) -> grpc.Channel:
    options = settings.channel_options()
    credentials = settings.credentials()
    if credentials is not None:
        channel = grpc.secure_channel(target, credentials, options=options)
    else:
        channel = grpc.insecure_channel(target, options=options)
    pair = settings.plaintext_metadata()
    interceptors: list[Any] = [SyncRequestId()] + ([] if pair is None else [SyncApiKey(pair)])
    return grpc.intercept_channel(channel, *interceptors)


class AioUnaryKey(_AioUnaryUnary):
    """`SyncApiKey` for grpc.aio's unary calls (grpc.aio files an interceptor under one
    kind of call only, so each kind has its own)."""

    def __init__(self, pair: tuple[str, str]) -> None:
        self._pair = pair

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        return await continuation(with_metadata(client_call_details, self._pair), request)


class AioStreamKey(_AioUnaryStream):
    """`SyncApiKey` for grpc.aio's server-streaming calls (WatchImage)."""

    def __init__(self, pair: tuple[str, str]) -> None:
        self._pair = pair

    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        return await continuation(with_metadata(client_call_details, self._pair), request)


class AioRequestId(_AioUnaryUnary):
    """`SyncRequestId` for grpc.aio; add it to a channel of your own with
    `grpc.aio.secure_channel(..., interceptors=[AioRequestId()])`."""

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        return await continuation(
            client_call_details, with_request_id(client_call_details.method, request)
        )


def aio_channel(target: str, settings: ChannelSettings) -> grpc.aio.Channel:
    options = settings.channel_options()
    credentials = settings.credentials()
    pair = settings.plaintext_metadata()
    keys = [] if pair is None else [AioUnaryKey(pair), AioStreamKey(pair)]
    interceptors: Any = [AioRequestId(), *keys]
    if credentials is not None:
        return grpc.aio.secure_channel(
            target, credentials, options=options, interceptors=interceptors
        )
    return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
