"""Who is calling, and may they: every RPC but health (and reflection, unless switched off)
names a principal, an API key (`authorization: Bearer imk_...`) or an mTLS client identity,
and the scope its method needs (`METHOD_SCOPES`).

Credential checks are cached in process, so a call costs a dictionary lookup and one SHA-256.
The cache trusts what it holds only while the change bus listens: a revoked key, a changed or
deleted project, a remapped identity evicts its entries on every replica when its change
commits; while the bus is down nothing is cached.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from imagery.common.api_keys import key_id_of, matches
from imagery.common.errors import (
    InvalidCredentials,
    KeyExpired,
    KeyRevoked,
    MissingCredentials,
    MissingScope,
)
from imagery.common.tenancy import Grant, Principal, Scope

log = logging.getLogger(__name__)

METHOD_SCOPES: dict[str, Scope] = {
    "/imagery.v1.UploadService/CreateUploadUrl": Scope.IMAGES_CREATE,
    "/imagery.v1.UploadService/UpdateImage": Scope.IMAGES_CREATE,
    "/imagery.v1.UploadService/DeleteImage": Scope.IMAGES_DELETE,
    "/imagery.v1.DeliveryService/GetImage": Scope.IMAGES_READ,
    "/imagery.v1.DeliveryService/GetDownloadUrl": Scope.IMAGES_READ,
    "/imagery.v1.DeliveryService/BatchGetDownloadUrls": Scope.IMAGES_READ,
    "/imagery.v1.DeliveryService/WatchImage": Scope.IMAGES_READ,  # server streaming
    "/imagery.v1.DeliveryService/BatchGetImages": Scope.IMAGES_READ,
    "/imagery.v1.DeliveryService/ListImages": Scope.IMAGES_READ,
    **{
        f"/imagery.v1.ProjectService/{rpc}": Scope.PROJECTS_ADMIN
        for rpc in (
            "CreateProject",
            "GetProject",
            "UpdateProject",
            "ListProjects",
            "DeleteProject",
            "UndeleteProject",
            "CreateApiKey",
            "ListApiKeys",
            "RevokeApiKey",
        )
    },
}
HEALTH_PREFIX = "/grpc.health.v1.Health/"
REFLECTION_PREFIXES = ("/grpc.reflection.v1alpha.", "/grpc.reflection.v1.")
_CURRENT: contextvars.ContextVar[Principal] = contextvars.ContextVar("imagery_principal")
_TOUCH_INTERVAL_SECONDS = 60.0
_CACHE_SIZE = 10_000


def current_principal() -> Principal:
    """The authenticated caller of the RPC being served."""
    try:
        return _CURRENT.get()
    except LookupError:
        raise MissingCredentials() from None


def set_principal(principal: Principal) -> contextvars.Token[Principal]:
    return _CURRENT.set(principal)


def reset_principal(token: contextvars.Token[Principal]) -> None:
    _CURRENT.reset(token)


class Authenticates(Protocol):
    """What the server needs to know a caller: `Authenticator`, or (in benchmarks only) a
    stand-in that skips the credential check."""

    async def authenticate(
        self,
        metadata: Mapping[str, str],
        peer_identity: str | Callable[[], str | None] | None,
    ) -> Principal: ...


class GrantSource(Protocol):
    async def grant_for_key(self, key_id: str) -> Grant | None: ...

    async def grant_for_identity(self, identity: str) -> Grant | None: ...

    async def touch_keys(self, key_ids: Sequence[str]) -> None: ...


class Authenticator:
    """Credentials to a `Principal`, or one of the UNAUTHENTICATED errors. `changed` and
    `reset` make it a change-bus subscriber; `caching` says whether the bus listens."""

    def __init__(
        self,
        grants: GrantSource,
        *,
        caching: Callable[[], bool] = lambda: False,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
        forwarded_identity_header: str | None = None,
    ) -> None:
        self._grants = grants
        self._caching = caching
        self._clock = clock
        self._monotonic = monotonic
        self._forwarded = forwarded_identity_header
        self._cache: dict[str, Grant] = {}  # "key:<id>" / "mtls:<identity>"
        # Names that were not found, apart: junk credentials never evict real grants.
        self._unknown: dict[str, None] = {}
        # Whole `authorization` headers already matched to their key: a call with one costs a
        # lookup, not a parse and a hash. Emptied by any change, like everything else here.
        self._verified: dict[str, tuple[Grant, Principal]] = {}
        self._epoch = 0
        self._touched: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # change-bus subscriber
    def changed(self, change: str) -> None:
        kind, _, ident = change.partition(":")
        if kind == "key":
            self._drop(f"key:{ident}")
        elif kind == "identity":
            self._drop(f"mtls:{ident}")
        elif kind == "project":
            self._epoch += 1
            self._verified.clear()
            for name, grant in list(self._cache.items()):
                if grant.project.id == ident:
                    del self._cache[name]

    def _drop(self, name: str) -> None:
        self._epoch += 1
        self._cache.pop(name, None)
        self._unknown.pop(name, None)
        self._verified.clear()

    def reset(self) -> None:
        self._epoch += 1
        self._cache.clear()
        self._unknown.clear()
        self._verified.clear()

    async def authenticate(
        self,
        metadata: Mapping[str, str],
        peer_identity: str | Callable[[], str | None] | None,
    ) -> Principal:
        """The caller: its API key if it sends one, else its client certificate's identity
        (`peer_identity`, or a function that reads it: only asked for without a key)."""
        header = metadata.get("authorization")
        if header is not None:
            verified = self._verified.get(header) if self._caching() else None
            if verified is not None:  # this exact header was checked: only time moves on
                grant, principal = verified
                self._check_state(grant)
                self._touch(grant.id)
                return principal
            scheme, _, secret = header.strip().partition(" ")
            if scheme.lower() != "bearer" or not secret.strip():
                raise InvalidCredentials("are not `Bearer <key>`")
            return await self._from_key(secret.strip(), header)
        identity = peer_identity() if callable(peer_identity) else peer_identity
        if identity is None and self._forwarded is not None:
            identity = forwarded_identity(metadata.get(self._forwarded))
        if identity is not None:
            return await self._from_identity(identity)
        raise MissingCredentials()

    async def _from_key(self, secret: str, header: str) -> Principal:
        key_id = key_id_of(secret)
        if key_id is None:
            raise InvalidCredentials("are not an imagery API key")
        epoch = self._epoch
        grant = await self._grant(f"key:{key_id}", key_id, self._grants.grant_for_key)
        if grant is None or grant.secret_hash is None or not matches(secret, grant.secret_hash):
            raise InvalidCredentials()
        self._check_state(grant)
        self._touch(key_id)
        principal = _principal(grant)
        if self._caching() and epoch == self._epoch:  # no change raced the load
            if len(self._verified) >= _CACHE_SIZE:
                del self._verified[next(iter(self._verified))]
            self._verified[header] = (grant, principal)
        return principal

    async def _from_identity(self, identity: str) -> Principal:
        grant = await self._grant(f"mtls:{identity}", identity, self._grants.grant_for_identity)
        if grant is None:
            raise InvalidCredentials(
                f"name the client identity {identity[:200]!r}, not mapped to a project"
            )
        self._check_state(grant)
        return _principal(grant)

    def _check_state(self, grant: Grant) -> None:
        if grant.revoked_at is not None:
            raise KeyRevoked(grant.id)
        if grant.project.deleted:
            raise KeyRevoked(grant.id, f"belongs to the deleted project {grant.project.id!r}")
        if grant.expire_time is not None and grant.expire_time <= self._clock():
            raise KeyExpired(grant.id)

    async def _grant(self, name: str, ident: str, load: Callable[[str], Any]) -> Grant | None:
        caching = self._caching()
        if caching:
            if name in self._cache:
                return self._cache[name]
            if name in self._unknown:
                return None
        epoch = self._epoch
        grant: Grant | None = await load(ident)
        if caching and self._caching() and epoch == self._epoch:  # no change raced the load
            kept: dict[str, Any] = self._cache if grant is not None else self._unknown
            if len(kept) >= _CACHE_SIZE:
                del kept[next(iter(kept))]
            kept[name] = grant
        return grant

    def _touch(self, key_id: str) -> None:
        now = self._monotonic()
        if now - self._touched.get(key_id, -_TOUCH_INTERVAL_SECONDS) < _TOUCH_INTERVAL_SECONDS:
            return
        self._touched[key_id] = now
        task = asyncio.get_running_loop().create_task(self._write_touch(key_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write_touch(self, key_id: str) -> None:
        try:
            await self._grants.touch_keys([key_id])
        except Exception as exc:  # noqa: BLE001 - last use is best effort; the call went on
            log.warning("could not record a key's last use", extra={"error": str(exc)})

    async def close(self) -> None:
        for task in list(self._tasks):
            await asyncio.gather(task, return_exceptions=True)


def _principal(grant: Grant) -> Principal:
    return Principal(
        kind=grant.kind,
        id=grant.id,
        project_id=grant.project.id,
        scopes=grant.scopes,
        operator=grant.project.operator,
        settings=grant.project.settings,
        content_scope=grant.project.content_scope,
        key_limits=grant.limits,
        profile=grant.project.profile,
    )


def authorize(principal: Principal, method: str) -> None:
    scope = METHOD_SCOPES.get(method)
    if scope is None or scope not in principal.scopes:
        name = method.rsplit("/", 1)[-1]
        raise MissingScope(scope.value if scope else "(none: the method is not open)", name)


def forwarded_identity(header: str | None) -> str | None:
    """The client identity in an Envoy `x-forwarded-client-cert` header (the last element:
    the hop nearest to us): its `URI=` (SPIFFE id), else the CN of its `Subject=`. Elements
    split on `,` and fields on `;` outside double quotes (`Subject="CN=svc,O=Acme"`)."""
    if not header:
        return None
    element = _split_unquoted(header, ",")[-1]
    fields: dict[str, str] = {}
    for part in _split_unquoted(element, ";"):
        name, _, value = part.partition("=")
        fields.setdefault(name.strip().lower(), _unquote(value.strip()))
    if fields.get("uri"):
        return fields["uri"]
    for rdn in _split_unquoted(fields.get("subject", ""), ","):  # RFC 2253: `\,` is escaped
        name, _, value = rdn.partition("=")
        if name.strip().upper() == "CN" and value.strip():
            return re.sub(r"\\(.)", r"\1", _unquote(value.strip()))
    return None


def _split_unquoted(text: str, separator: str) -> list[str]:
    """`text` split at each `separator` outside double quotes and not escaped by `\\`."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('\\"', '"')
    return value


def peer_identity(auth_context: Mapping[str, Iterable[bytes]]) -> str | None:
    """The verified client certificate's identity: its SPIFFE URI SAN, else its subject CN."""
    for san in auth_context.get("x509_subject_alternative_name", ()):
        value = san.decode(errors="replace")
        if value.startswith("spiffe://"):
            return value
    for cn in auth_context.get("x509_common_name", ()):
        return cn.decode(errors="replace")
    return None
