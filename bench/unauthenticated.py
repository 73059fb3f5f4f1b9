"""The bench-only half of "with auth vs without auth": the production server, built by its
own bootstrap, with the credential check replaced by one fixed principal. The principal is
resolved once, at start-up, from an API key by the real `Authenticator`, so everything else
(scopes, rate limits, the concurrent-call cap, the servicers) runs exactly as with auth: the
only difference is the check. Never a production setting: only `bench/*_server.py` pass it,
when `UNAUTHENTICATED_AS_KEY` is set."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from imagery.common.grpc.auth import Authenticates, Authenticator
from imagery.common.tenancy import Principal

UNAUTHENTICATED_AS_KEY = "BENCH_UNAUTHENTICATED_AS_KEY"


class FixedPrincipal:
    """Every call is `principal`'s, with no look at its credentials."""

    def __init__(self, principal: Principal) -> None:
        self._principal = principal

    async def authenticate(
        self,
        metadata: Mapping[str, str],
        peer_identity: str | Callable[[], str | None] | None,
    ) -> Principal:
        return self._principal


def as_key(key: str | None) -> Callable[[Authenticator], Awaitable[Authenticates]] | None:
    """For `build_server(authenticates=...)`: None (the real check) without a key."""
    if not key:
        return None

    async def fixed(authenticator: Authenticator) -> Authenticates:
        principal = await authenticator.authenticate({"authorization": f"Bearer {key}"}, None)
        return FixedPrincipal(principal)

    return fixed
