from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from imagery.common.cdn import (
    CloudFrontUrlBuilder,
    SigningKeyError,
    base_url_for,
    load_private_key,
)
from imagery.delivery.adapters.cloudfront import CachedCloudFrontSigner
from imagery.devstack.edge import verify_signed_url
from tests.keys import pem, private_key

KEY = "variants/" + "a" * 64 + "/small.webp"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _signer(
    kind: str = "ecdsa",
    *,
    clock: Clock,
    cache: int = 100,
    hash_algorithm: str = "SHA1",
    executor: ThreadPoolExecutor | None = None,
) -> CachedCloudFrontSigner:
    builder = CloudFrontUrlBuilder(
        "https://d111.cloudfront.net", "K2JCJMDEHXQW5F", private_key(kind), hash_algorithm
    )
    return CachedCloudFrontSigner(
        builder,
        expiry_seconds=600,
        bucket_seconds=300,
        cache_size=cache,
        executor=executor,
        threads=2,
        clock=clock,
    )


@pytest.mark.parametrize("kind", ["rsa", "ecdsa"])
@pytest.mark.parametrize("hash_algorithm", ["SHA1", "SHA256"])
async def test_urls_have_the_cloudfront_canned_layout(kind: str, hash_algorithm: str) -> None:
    signer = _signer(kind, clock=Clock(1_800_000_000), hash_algorithm=hash_algorithm)
    signed = await signer.sign_many([KEY])
    parts = urlsplit(signed.urls[0])
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "d111.cloudfront.net", f"/{KEY}")
    query = parse_qs(parts.query)
    assert set(query) == {"Expires", "Signature", "Key-Pair-Id"} | (
        {"Hash-Algorithm"} if hash_algorithm == "SHA256" else set()
    )
    assert query["Key-Pair-Id"] == ["K2JCJMDEHXQW5F"]
    assert int(query["Expires"][0]) == int(signed.expire_time.timestamp())
    assert not set(query["Signature"][0]) & set("+=/"), "CloudFront-safe base64"
    assert (
        verify_signed_url(
            signed.urls[0],
            private_key(kind).public_key(),
            "K2JCJMDEHXQW5F",
            now=datetime.fromtimestamp(1_800_000_000, UTC),
        )
        is None
    )


async def test_expiry_is_bucketed_and_never_shorter_than_configured() -> None:
    clock = Clock(1_800_000_001)
    signer = _signer(clock=clock)
    seen = []
    for step in range(0, 1200, 7):
        clock.now = 1_800_000_001 + step
        signed = await signer.sign_many([KEY])
        lifetime = signed.expire_time.timestamp() - clock.now
        assert 600 <= lifetime < 900
        seen.append(signed.urls[0])
    assert len(set(seen)) == 4, "one URL per 300 s bucket over 20 minutes"


async def test_within_a_bucket_the_same_key_gets_the_same_url_from_the_cache() -> None:
    clock = Clock(1_800_000_001)
    signer = _signer(clock=clock)
    first = await signer.sign_many([KEY, KEY.replace("small", "large")])
    clock.now += 100
    second = await signer.sign_many([KEY, KEY.replace("small", "large")])
    assert first.urls == second.urls
    assert (signer.misses, signer.hits) == (2, 2)


async def test_without_a_cache_every_url_is_signed_again() -> None:
    signer = _signer("rsa", clock=Clock(1_800_000_001), cache=0)
    await signer.sign_many([KEY])
    await signer.sign_many([KEY])
    assert (signer.misses, signer.hits) == (2, 0)


async def test_large_cold_batches_sign_on_the_thread_pool_with_the_same_result() -> None:
    keys = [f"variants/{i:064x}/small.webp" for i in range(50)]
    with ThreadPoolExecutor(2) as pool:
        threaded = await _signer(
            "rsa", clock=Clock(1_800_000_001), cache=0, executor=pool
        ).sign_many(keys)
    inline = await _signer("rsa", clock=Clock(1_800_000_001), cache=0).sign_many(keys)
    assert threaded.urls == inline.urls, "RSA PKCS#1 v1.5 is deterministic"
    assert len(set(threaded.urls)) == 50


class CountingExecutor(ThreadPoolExecutor):
    def __init__(self) -> None:
        super().__init__(2)
        self.submitted = 0

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        self.submitted += 1
        return super().submit(*args, **kwargs)


@pytest.mark.parametrize(("kind", "threaded"), [("rsa", True), ("ecdsa", False)])
async def test_only_rsa_batches_go_to_the_threads(kind: str, threaded: bool) -> None:
    keys = [f"variants/{i:064x}/small.webp" for i in range(50)]
    with CountingExecutor() as pool:
        signed = await _signer(kind, clock=Clock(1_800_000_001), cache=0, executor=pool).sign_many(
            keys
        )
        one = await _signer(kind, clock=Clock(1_800_000_001), cache=0, executor=pool).sign_many(
            keys[:1]
        )
    assert len(set(signed.urls)) == 50 and len(one.urls) == 1
    assert (pool.submitted > 0) is threaded, "ECDSA holds the GIL half the time: inline"


async def test_duplicate_keys_in_a_batch_are_signed_once() -> None:
    signer = _signer(clock=Clock(1_800_000_001))
    urls = await signer.sign_many([KEY, KEY, KEY])
    assert len(set(urls.urls)) == 1
    assert signer.misses == 1


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        (rsa.generate_private_key(65537, 1024), "RSA-2048"),
        (rsa.generate_private_key(65537, 3072), "RSA-2048"),
        (ec.generate_private_key(ec.SECP384R1()), "P-256"),
        (ed25519.Ed25519PrivateKey.generate(), "RSA-2048 or ECDSA P-256"),
    ],
)
def test_keys_cloudfront_does_not_accept_are_refused(key: object, problem: str) -> None:
    with pytest.raises(SigningKeyError, match=problem):
        load_private_key(pem(key))  # type: ignore[arg-type]


def test_garbage_is_not_a_key() -> None:
    with pytest.raises(SigningKeyError, match="PEM"):
        load_private_key(b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")


def test_both_accepted_key_types_load() -> None:
    assert isinstance(load_private_key(pem(private_key("rsa"))), rsa.RSAPrivateKey)
    assert isinstance(load_private_key(pem(private_key("ecdsa"))), ec.EllipticCurvePrivateKey)


def test_base_url_defaults_to_https_and_keeps_an_explicit_scheme() -> None:
    assert base_url_for("d111.cloudfront.net") == "https://d111.cloudfront.net"
    assert base_url_for("http://127.0.0.1:4580/") == "http://127.0.0.1:4580"
