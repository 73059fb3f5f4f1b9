"""Rate limits per project and RPC class (create, read, delete, admin), counted with the
`limits` library: in Redis when `REDIS_URL` is set, so a limit holds across replicas, else
in this process (the local stack's default; each replica then allows the limit on its own).

A project's limits are its settings (`rate_<class>_per_minute`, 0: unlimited) with the
deployment's defaults and ceilings. Counting is a sliding window (the previous minute's count,
weighted, plus this minute's): a burst cannot double the limit across a minute boundary, and
it costs Redis one round trip per call. When the counter store cannot be reached the call is
let through and a warning logged: an outage of the counters must not become an outage of
imagery.
"""

from __future__ import annotations

import logging
import time

import coredis
from limits import RateLimitItem, RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string

from imagery.common.errors import RateLimited
from imagery.common.grpc.auth import METHOD_SCOPES
from imagery.common.tenancy import EffectiveSettings, Principal, Scope, SettingsPolicy

log = logging.getLogger(__name__)

_CLASS = {
    Scope.IMAGES_CREATE: "create",
    Scope.IMAGES_READ: "read",
    Scope.IMAGES_DELETE: "delete",
    Scope.PROJECTS_ADMIN: "admin",
}
METHOD_CLASSES = {method: _CLASS[scope] for method, scope in METHOD_SCOPES.items()}


class RateLimits:
    def __init__(self, policy: SettingsPolicy, redis_url: str | None = None) -> None:
        self._policy = policy
        storage: Storage
        self._redis: coredis.ConnectionPool | None = None
        if redis_url:
            self._redis = coredis.ConnectionPool.from_url(redis_url)  # ours, so we close it
            uri = redis_url.replace("redis://", "async+redis://", 1)
            storage = storage_from_string(uri, connection_pool=self._redis)  # type: ignore[arg-type,assignment]
        else:
            storage = MemoryStorage()
        self.shared = bool(redis_url)
        self._limiter = SlidingWindowCounterRateLimiter(storage)
        self._items: dict[int, RateLimitItem] = {}
        self._effective: dict[object, EffectiveSettings] = {}
        self._warned = 0.0

    def _limit(self, caller: Principal, rpc_class: str) -> int:
        effective = self._effective.get(caller.settings)
        if effective is None:
            if len(self._effective) > 10_000:
                self._effective.clear()
            effective = self._effective[caller.settings] = self._policy.effective(caller.settings)
        limit: int = getattr(effective, f"rate_{rpc_class}_per_minute")
        return limit

    async def check(self, caller: Principal, method: str) -> None:
        """Count one call of `method` for the caller's project, or raise RateLimited."""
        rpc_class = METHOD_CLASSES.get(method)
        if rpc_class is None:
            return
        limit = self._limit(caller, rpc_class)
        if not limit:
            return
        item = self._items.get(limit)
        if item is None:
            item = self._items[limit] = RateLimitItemPerMinute(limit)
        key = ("project", caller.project_id, rpc_class)
        try:
            if await self._limiter.hit(item, *key):
                return
            stats = await self._limiter.get_window_stats(item, *key)
        except Exception as exc:  # noqa: BLE001 - counters down: let calls through
            self._warn(exc)
            return
        retry = max(0.05, stats.reset_time - time.time())
        raise RateLimited(f"projects/{caller.project_id}", rpc_class, limit, 60, retry)

    def close(self) -> None:
        """Close the connections to Redis (none in process)."""
        if self._redis is not None:
            self._redis.disconnect()

    def _warn(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._warned > 60:
            self._warned = now
            log.warning(
                "rate-limit counters unreachable: calls are let through",
                extra={"error": f"{type(exc).__name__}: {exc}"},
            )
