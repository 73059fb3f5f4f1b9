"""CachedCloudFrontSigner: time-bucketed expiry, a bounded cache of signed URLs per expiry
bucket (a new bucket starts an empty cache, so old URLs go all at once) and per URL
lifetime (projects choose their own), and large cold
batches signed on a small thread pool (`cryptography` releases the GIL while signing,
so RSA batches use both cores instead of stalling the event loop)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from datetime import UTC, datetime

from opentelemetry import metrics

from imagery.common.cdn import CloudFrontUrlBuilder, key_type
from imagery.delivery.ports import SignedUrls

# Sign on the event loop unless a batch would hold it longer than this. Only RSA goes to the
# threads: an RSA signature is spent almost all in OpenSSL without the GIL, so threads shorten
# a cold batch. ECDSA always stays inline: a signature is cheap and half of it is Python
# holding the GIL, so threads only add contention; deciding by a measured cost flipped between
# the two from one start to the next. `make bench` shows both.
INLINE_BUDGET_SECONDS = 0.005
_MAX_LIFETIMES = 64  # distinct URL lifetimes with a cache of their own
_METER = metrics.get_meter(__name__)
_SIGNED = _METER.create_counter(
    "imagery.delivery.urls_signed", description="CloudFront URLs signed"
)
_CACHE = _METER.create_counter(
    "imagery.delivery.signature_cache.lookups",
    description="Signed-URL cache lookups by result (hit ratio = hit / all)",
)
_FAILURES = _METER.create_counter(
    "imagery.delivery.signing_failures",
    description="Batches of URLs the signer could not sign, by the error's type (the call"
    " answers INTERNAL): a key that no longer loads, an executor gone",
)
_HIT, _MISS = {"result": "hit"}, {"result": "miss"}


class CachedCloudFrontSigner:
    def __init__(
        self,
        builder: CloudFrontUrlBuilder,
        *,
        expiry_seconds: int,
        bucket_seconds: int,
        cache_size: int,
        executor: Executor | None = None,
        threads: int = 1,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._builder = builder
        self._expiry = expiry_seconds
        self._bucket = max(1, min(bucket_seconds, expiry_seconds))
        self._bucket_seconds = bucket_seconds
        self._cache_size = cache_size
        # URL lifetime -> (the expiry bucket its cache belongs to, key -> URL)
        self._caches: dict[int, tuple[int, dict[str, str]]] = {}
        self._executor = executor
        self._threads = max(1, threads)
        self._clock = clock
        self._key_type = key_type(builder.key)
        self._signed_attributes = {"key_type": self._key_type}
        self.hits = 0
        self.misses = 0
        self.sign_cost_seconds = _measure_sign_cost(builder)

    def expires_at(self, expiry_seconds: int | None = None) -> int:
        """The end of the current bucket, at least `expiry` seconds away: every URL handed
        out lives between `expiry` and `expiry + bucket` seconds, and all requests in one
        bucket get the same expiry, hence the same URL (browser and CDN caches work)."""
        expiry = expiry_seconds or self._expiry
        bucket = (
            self._bucket if expiry == self._expiry else max(1, min(self._bucket_seconds, expiry))
        )
        return math.ceil((self._clock() + expiry) / bucket) * bucket

    def _cache_for(self, expiry: int, expires: int) -> dict[str, str]:
        held = self._caches.get(expiry)
        if held is not None and held[0] == expires:
            return held[1]
        if held is None and len(self._caches) >= _MAX_LIFETIMES:
            del self._caches[next(iter(self._caches))]
        cache: dict[str, str] = {}
        self._caches[expiry] = (expires, cache)
        return cache

    async def sign_many(
        self, object_keys: Sequence[str], expiry_seconds: int | None = None
    ) -> SignedUrls:
        expiry = expiry_seconds or self._expiry
        expires = self.expires_at(expiry)
        cache = self._cache_for(expiry, expires)
        unique = dict.fromkeys(object_keys)
        missing = [k for k in unique if k not in cache] if cache else list(unique)
        hits = len(object_keys) - len(missing)
        self.hits += hits
        self.misses += len(missing)
        if hits:
            _CACHE.add(hits, _HIT)
        if not missing:
            urls = [cache[key] for key in object_keys]
            return SignedUrls(urls, datetime.fromtimestamp(expires, UTC))
        _CACHE.add(len(missing), _MISS)
        try:
            fresh = await self._sign(missing, expires)
        except Exception as exc:
            _FAILURES.add(1, {"reason": type(exc).__name__})
            raise
        _SIGNED.add(len(fresh), self._signed_attributes)
        room = self._cache_size - len(cache)
        if room > 0:
            cache.update(fresh if len(fresh) <= room else dict(list(fresh.items())[:room]))
        if hits:
            urls = [fresh.get(key) or cache[key] for key in object_keys]
        else:  # a cold batch: every URL is fresh
            urls = [fresh[key] for key in object_keys]
        return SignedUrls(urls, datetime.fromtimestamp(expires, UTC))

    async def _sign(self, keys: list[str], expires: int) -> dict[str, str]:
        if (
            self._executor is None
            or self._key_type != "RSA"
            or len(keys) * self.sign_cost_seconds < INLINE_BUDGET_SECONDS
        ):
            return self._sign_chunk(keys, expires)
        loop = asyncio.get_running_loop()
        size = math.ceil(len(keys) / self._threads)
        chunks = [keys[i : i + size] for i in range(0, len(keys), size)]
        parts = await asyncio.gather(
            *(
                loop.run_in_executor(self._executor, self._sign_chunk, chunk, expires)
                for chunk in chunks
            )
        )
        return {k: v for part in parts for k, v in part.items()}

    def _sign_chunk(self, keys: list[str], expires: int) -> dict[str, str]:
        when = datetime.fromtimestamp(expires, UTC)
        return {key: self._builder.sign(key, when) for key in keys}


def _measure_sign_cost(builder: CloudFrontUrlBuilder, samples: int = 9) -> float:
    """Median seconds per signature on this machine with this key (after one warm-up)."""
    when = datetime.now(UTC)
    builder.sign("variants/warm-up", when)
    costs = []
    for _ in range(samples):
        started = time.perf_counter()
        builder.sign("variants/warm-up", when)
        costs.append(time.perf_counter() - started)
    return sorted(costs)[samples // 2]
