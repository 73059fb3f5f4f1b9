"""Client side of authentication for tests: a channel that sends an API key on every call,
as a client's call credentials would."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import grpc

if TYPE_CHECKING:  # generic in grpc-stubs only, not at run time
    _UnaryUnaryInterceptor = grpc.aio.UnaryUnaryClientInterceptor[Any, Any]
else:
    _UnaryUnaryInterceptor = grpc.aio.UnaryUnaryClientInterceptor


class BearerKey(_UnaryUnaryInterceptor):
    def __init__(self, key: str) -> None:
        self._metadata = ("authorization", f"Bearer {key}")

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        metadata = grpc.aio.Metadata(*(details.metadata or ()), self._metadata)
        return await continuation(details._replace(metadata=metadata), request)


def channel(target: str, key: str | None) -> grpc.aio.Channel:
    """A plaintext channel to `target` that authenticates with `key` (None: no credentials)."""
    # grpc-stubs types interceptors as a placeholder that asks for a cast.
    interceptors = [cast("grpc.aio.ClientInterceptor", BearerKey(key))] if key else []
    return grpc.aio.insecure_channel(target, interceptors=interceptors)
