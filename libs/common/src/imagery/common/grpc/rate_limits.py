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

A round trip to Redis costs a call more than the rest of its checks together, so against a
high limit a replica counts calls in advance: it takes a batch (1% of the limit, at most
`MAX_BATCH`) from the shared counter in one hit and admits that many calls locally, within
`BATCH_SECONDS`, taking the next one while half of it is left, so no call waits for Redis.
A batch counts in full whether or not its calls come, so the limit is never exceeded; a busy
project is at worst refused 2% early per replica. Limits under 200 a minute
are counted call by call, and near the limit (a batch refused) calls are counted one by one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import redis.asyncio
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
MAX_BATCH = 16
BATCH_SECONDS = 1.0
SKIP_AFTER_FAILURE_SECONDS = 5.0
_SCHEMES = ("redis", "rediss", "unix")


def _redis_pool(url: str, timeout_seconds: float) -> redis.asyncio.ConnectionPool:
    """Connections for a Redis URL (`redis://`, `rediss://` with TLS, `unix://`), every wait
    on them bounded."""
    scheme, sep, _ = url.partition("://")
    if not sep or scheme not in _SCHEMES:
        raise ConfigError(
            f"REDIS_URL={url!r} is not a Redis URL: use redis://, rediss:// or unix://."
        )
    return redis.asyncio.ConnectionPool.from_url(
        url, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds
    )


@dataclass
class _Batch:
    left: int
    until: float
    taking: asyncio.Future[None] | None = None
    near: bool = False  # no room for a batch: count call by call until `until`


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
        self._redis: redis.asyncio.ConnectionPool | None = None
        if redis_url:
            # Ours, so we close it; every wait on Redis is bounded, so a hung Redis costs a
            # call at most the timeout (and then nothing for a while, see `_skip_until`).
            # redis-py, not coredis: in the gRPC server a check costs 0.5 ms with it, 1.4 ms
            # with coredis (median server time of CreateUploadUrl, same machine and run).
            self._redis = _redis_pool(redis_url, timeout_seconds)
            storage = RedisStorage(
                "async+redis://",  # the connections are the pool's
                implementation="redispy",
                connection_pool=self._redis,  # type: ignore[arg-type]  # documented option
            )
        else:
            storage = MemoryStorage()
        self.shared = bool(redis_url)
        self._limiter = SlidingWindowCounterRateLimiter(storage)
        self._items: dict[int, RateLimitItem] = {}
        # (subject, class) -> calls already counted in the shared store, and until when
        self._batches: dict[tuple[str, str], _Batch] = {}
        self._prefetching: set[asyncio.Task[None]] = set()
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
        size = min(MAX_BATCH, limit // 100) if self.shared else 1
        if size > 1:
            if await self._from_batch(item, key, size):
                return
            if time.monotonic() < self._skip_until:
                return
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

    async def _from_batch(self, item: RateLimitItem, key: tuple[str, str], size: int) -> bool:
        """Admit one call from this replica's batch, taking a new batch when it is used up or
        stale (one hit at a time per key; concurrent calls wait for it). False when the
        shared counter has no room for a whole batch: count this call on its own."""
        while True:
            batch = self._batches.get(key)
            now = time.monotonic()
            if batch is not None and now < batch.until:
                if batch.near:
                    return False
                if batch.left > 0:
                    batch.left -= 1
                    if batch.left <= size // 2 and batch.taking is None:
                        self._prefetch(item, key, size, batch)
                    return True
            if batch is not None and batch.taking is not None:
                await asyncio.shield(batch.taking)
                continue
            taking = asyncio.get_running_loop().create_future()
            batch = self._batches[key] = _Batch(0, 0.0, taking)
            try:
                async with asyncio.timeout(self._timeout):
                    granted = await self._limiter.hit(item, *key, cost=size)
            except Exception as exc:  # noqa: BLE001 - counters down or slow: let calls through
                self._unreachable(exc)
                granted = False
            finally:
                batch.taking = None
                taking.set_result(None)
            batch.until = time.monotonic() + BATCH_SECONDS
            if not granted:
                batch.near = True
                return False
            batch.left = size - 1
            return True

    def _prefetch(
        self, item: RateLimitItem, key: tuple[str, str], size: int, batch: _Batch
    ) -> None:
        """Take the next batch while half of this one is left, so that calls do not wait for
        Redis when it runs out (refused: nothing is added; the next call finds out)."""
        batch.taking = asyncio.get_running_loop().create_future()

        async def take(taking: asyncio.Future[None]) -> None:
            try:
                async with asyncio.timeout(self._timeout):
                    if await self._limiter.hit(item, *key, cost=size):
                        batch.left += size
                        batch.until = time.monotonic() + BATCH_SECONDS
            except Exception as exc:  # noqa: BLE001 - counters down or slow: as in `_hit`
                self._unreachable(exc)
            finally:
                batch.taking = None
                taking.set_result(None)

        task = asyncio.create_task(take(batch.taking))
        self._prefetching.add(task)
        task.add_done_callback(self._prefetching.discard)

    async def close(self) -> None:
        """Close the connections to Redis (none in process)."""
        for task in list(self._prefetching):
            task.cancel()
        if self._redis is not None:
            await self._redis.aclose()

    def _unreachable(self, exc: Exception) -> None:
        now = time.monotonic()
        self._skip_until = now + SKIP_AFTER_FAILURE_SECONDS
        if now - self._warned > 60:
            self._warned = now
            log.warning(
                "rate-limit counters unreachable: calls are let through",
                extra={"error": f"{type(exc).__name__}: {exc}"},
            )
