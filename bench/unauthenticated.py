"""The bench-only half of "with auth vs without auth": the same servicers served with
`GrpcServer(..., authenticator=None)`, each RPC run as one fixed principal, as the
authenticating interceptor runs it after a successful check. The principal is resolved once,
at start-up, from an API key by the real `Authenticator`, so the servicers see exactly what
they see with auth: the only difference is the credential check. Never a production setting:
only `bench/*_server.py` build this, when `UNAUTHENTICATED_AS_KEY` is set."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import grpc

from imagery.common.grpc.auth import Authenticator, reset_principal, set_principal
from imagery.common.grpc.server import ServiceRegistration
from imagery.common.tenancy import Principal

UNAUTHENTICATED_AS_KEY = "BENCH_UNAUTHENTICATED_AS_KEY"


class _Registrable(Protocol):
    def registration(self) -> ServiceRegistration: ...


async def principal_of(authenticator: Authenticator, key: str) -> Principal:
    return await authenticator.authenticate({"authorization": f"Bearer {key}"}, None)


def running_as(
    principal: Principal,
    servicer: _Registrable,
    add_to_server: Callable[[Any, grpc.aio.Server], None],
) -> ServiceRegistration:
    """`servicer`'s registration, its RPCs run as `principal` without a credential check."""
    proxy = _AsPrincipal(servicer, principal)
    return ServiceRegistration(
        servicer.registration().name, lambda server: add_to_server(proxy, server)
    )


class _AsPrincipal:
    """Looks up each RPC method once (the generated `add_*_to_server` does, at registration)
    and wraps it: set the principal, run, reset, as the interceptor does."""

    def __init__(self, servicer: object, principal: Principal) -> None:
        self._servicer = servicer
        self._principal = principal

    def __getattr__(self, name: str) -> Callable[[Any, Any], Awaitable[Any]]:
        method = getattr(self._servicer, name)
        principal = self._principal

        async def call(request: Any, context: Any) -> Any:
            token = set_principal(principal)
            try:
                return await method(request, context)
            finally:
                reset_principal(token)

        return call
