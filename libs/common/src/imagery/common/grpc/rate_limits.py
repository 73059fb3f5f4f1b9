"""Rate limits per project and RPC class (create, read, delete, admin), counted with the
`limits` library: in Redis when `REDIS_URL` is set, so a limit holds across replicas, else
in this process (the local stack's default; each replica then allows the limit on its own).

Every wait on Redis is bounded (`REDIS_TIMEOUT_SECONDS`); after a failure the counters are
skipped for `SKIP_AFTER_FAILURE_SECONDS`, so a hung Redis delays at most one call per
replica every few seconds.

A key's own limits (set when it is created) narrow its project's for the calls it makes.
A project's limits are its settings (`rate_<class>_per_minute`, 0: unlimited) with the
deployment's defaults and ceilings. Counting is a sliding window (the previous minute's count,
weighted, plus this minute's): a burst cannot double the limit across a minute boundary, and
it costs Redis one round trip per call. When the counter store cannot be reached the call is
let through and a warning logged: an outage of the counters must not become an outage of
imagery.
"""

from __future__ import annotations

import asyncio
import logging
import time

import coredis
from limits import RateLimitItem, RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from imagery.common.config import ConfigError
from imagery.common.errors import RateLimited
from imagery.common.grpc.auth import METHOD_SCOPES
from imagery.common.tenancy import Principal, Scope, SettingsPolicy

log = logging.getLogger(__name__)

_CLASS = {
    Scope.IMAGES_CREATE: "create",
    Scope.IMAGES_READ: "read",
    Scope.IMAGES_DELETE: "delete",
    Scope.PROJECTS_ADMIN: "admin",
}
METHOD_CLASSES = {method: _CLASS[scope] for method, scope in METHOD_SCOPES.items()}
REDIS_TIMEOUT_SECONDS = 0.25
SKIP_AFTER_FAILURE_SECONDS = 5.0
_SCHEMES = {"redis": "async+redis", "rediss": "async+rediss", "unix": "async+redis+unix"}


def _async_uri(url: str) -> str:
    """The `limits` storage URI of a Redis URL (`redis://`, `rediss://` with TLS, `unix://`)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in _SCHEMES:
        raise ConfigError(
            f"REDIS_URL={url!r} is not a Redis URL: use redis://, rediss:// or unix://."
        )
    return f"{_SCHEMES[scheme]}://{rest}"


class RateLimits:
    def __init__(
        self,
        policy: SettingsPolicy,
        redis_url: str | None = None,
        *,
        timeout_seconds: float = REDIS_TIMEOUT_SECONDS,
    ) -> None:
        self._policy = policy
        self._timeout = timeout_seconds
        storage: Storage
        self._redis: coredis.ConnectionPool | None = None
        if redis_url:
            # Ours, so we close it; every wait on Redis is bounded, so a hung Redis costs a
            # call at most the timeout (and then nothing for a while, see `_skip_until`).
            self._redis = coredis.ConnectionPool.from_url(
                redis_url, connect_timeout=timeout_seconds, stream_timeout=timeout_seconds
            )
            storage = RedisStorage(
                _async_uri(redis_url),
                connection_pool=self._redis,  # type: ignore[arg-type]  # documented option
            )
        else:
            storage = MemoryStorage()
        self.shared = bool(redis_url)
        self._limiter = SlidingWindowCounterRateLimiter(storage)
        self._items: dict[int, RateLimitItem] = {}
        self._skip_until = 0.0  # after a failure, counters are skipped for a few seconds
        self._warned = 0.0

    def _limit(self, caller: Principal, rpc_class: str) -> int:
        effective = self._policy.effective(caller.settings)
        limit: int = getattr(effective, f"rate_{rpc_class}_per_minute")
        return limit

    async def check(self, caller: Principal, method: str) -> None:
        """Count one call of `method` for the caller's key (when it has a limit of its own)
        and project, or raise RateLimited. The key is counted first: a key past its own
        limit spends none of the project's."""
        rpc_class = METHOD_CLASSES.get(method)
        if rpc_class is None:
            return
        own = caller.key_limits.of(rpc_class) if caller.kind == "key" else 0
        if own:
            await self._hit(own, f"projects/{caller.project_id}/apiKeys/{caller.id}", rpc_class)
        limit = self._limit(caller, rpc_class)
        if limit:
            await self._hit(limit, f"projects/{caller.project_id}", rpc_class)

    async def _hit(self, limit: int, subject: str, rpc_class: str) -> None:
        item = self._items.get(limit)
        if item is None:
            item = self._items[limit] = RateLimitItemPerMinute(limit)
        if time.monotonic() < self._skip_until:
            return
        key = (subject, rpc_class)
        try:
            async with asyncio.timeout(self._timeout):
                if await self._limiter.hit(item, *key):
                    return
        except Exception as exc:  # noqa: BLE001 - counters down or slow: let calls through
            self._unreachable(exc)
            return
        try:
            async with asyncio.timeout(self._timeout):
                stats = await self._limiter.get_window_stats(item, *key)
            # A tick past the reset: a client that waits exactly this long is admitted.
            retry = min(60.0, max(0.05, stats.reset_time - time.time()) + 0.05)
        except Exception as exc:  # noqa: BLE001 - refused all the same, with a guess
            self._unreachable(exc)
            retry = 1.0
        raise RateLimited(subject, rpc_class, limit, 60, retry)

    def close(self) -> None:
        """Close the connections to Redis (none in process)."""
        if self._redis is not None:
            self._redis.disconnect()

    def _unreachable(self, exc: Exception) -> None:
        now = time.monotonic()
        self._skip_until = now + SKIP_AFTER_FAILURE_SECONDS
        if now - self._warned > 60:
            self._warned = now
            log.warning(
                "rate-limit counters unreachable: calls are let through",
                extra={"error": f"{type(exc).__name__}: {exc}"},
            )
