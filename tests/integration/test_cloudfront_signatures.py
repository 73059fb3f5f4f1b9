"""Signed URLs checked the way CloudFront checks them, independently of our own verifier:
the canned policy is written out by hand here and the signature verified with the public key."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest
from botocore.signers import CloudFrontSigner
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from imagery.common.cdn import CloudFrontUrlBuilder, signer_for
from imagery.devstack.edge import verify_signed_url
from tests.keys import private_key

pytestmark = pytest.mark.integration
BASE = "https://d111111abcdef8.cloudfront.net"
KEY = "variants/" + "b" * 64 + "/medium.webp"
EXPIRES = datetime(2030, 1, 1, tzinfo=UTC)


def _decode(signature: str) -> bytes:
    return base64.b64decode(signature.replace("-", "+").replace("_", "=").replace("~", "/"))


@pytest.mark.parametrize("kind", ["rsa", "ecdsa"])
@pytest.mark.parametrize("hash_name", ["SHA1", "SHA256"])
def test_signature_verifies_against_the_canned_policy(kind: str, hash_name: str) -> None:
    key = private_key(kind)
    url = CloudFrontUrlBuilder(BASE, "KPAIR", key, hash_name).sign(KEY, EXPIRES)
    query = parse_qs(urlsplit(url).query)
    epoch = int(EXPIRES.timestamp())
    assert query["Expires"] == [str(epoch)]
    assert query.get("Hash-Algorithm", ["SHA1"]) == [hash_name]
    policy = (
        f'{{"Statement":[{{"Resource":"{BASE}/{KEY}",'
        f'"Condition":{{"DateLessThan":{{"AWS:EpochTime":{epoch}}}}}}}]}}'
    ).encode()
    algorithm = hashes.SHA1() if hash_name == "SHA1" else hashes.SHA256()
    signature = _decode(query["Signature"][0])
    public = key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        public.verify(signature, policy, padding.PKCS1v15(), algorithm)
    else:
        assert isinstance(public, ec.EllipticCurvePublicKey)
        public.verify(signature, policy, ec.ECDSA(algorithm))


@pytest.mark.parametrize("hash_name", ["SHA1", "SHA256"])
def test_rsa_urls_match_botocores_cloudfront_signer_exactly(hash_name: str) -> None:
    key = private_key("rsa")
    ours = CloudFrontUrlBuilder(BASE, "KPAIR", key, hash_name).sign(KEY, EXPIRES)
    theirs = CloudFrontSigner("KPAIR", signer_for(key, hash_name)).generate_presigned_url(
        f"{BASE}/{KEY}", date_less_than=EXPIRES
    )
    suffix = "" if hash_name == "SHA1" else "&Hash-Algorithm=SHA256"
    assert ours == theirs + suffix


def test_ecdsa_urls_differ_only_in_the_randomised_signature() -> None:
    key = private_key("ecdsa")
    a = CloudFrontUrlBuilder(BASE, "KPAIR", key).sign(KEY, EXPIRES)
    b = CloudFrontSigner("KPAIR", signer_for(key, "SHA1")).generate_presigned_url(
        f"{BASE}/{KEY}", date_less_than=EXPIRES
    )

    def strip(url: str) -> dict[str, list[str]]:
        return {k: v for k, v in parse_qs(urlsplit(url).query).items() if k != "Signature"}

    assert strip(a) == strip(b)
    now = datetime(2029, 1, 1, tzinfo=UTC)
    assert verify_signed_url(a, key.public_key(), "KPAIR", now=now) is None
    assert verify_signed_url(b, key.public_key(), "KPAIR", now=now) is None


@pytest.mark.parametrize("kind", ["rsa", "ecdsa"])
def test_the_verifier_refuses_what_cloudfront_refuses(kind: str) -> None:
    key = private_key(kind)
    url = CloudFrontUrlBuilder(BASE, "KPAIR", key, "SHA256").sign(KEY, EXPIRES)
    now = datetime(2029, 1, 1, tzinfo=UTC)
    public = key.public_key()
    assert verify_signed_url(url, public, "KPAIR", now=now) is None
    assert verify_signed_url(url, public, "OTHER", now=now) == "unknown key pair id"
    assert (
        verify_signed_url(url, public, "KPAIR", now=datetime(2031, 1, 1, tzinfo=UTC)) == "expired"
    )
    other_path = url.replace("/medium.webp", "/large.webp")
    assert verify_signed_url(other_path, public, "KPAIR", now=now) == "signature does not match"
    later = url.replace(
        f"Expires={int(EXPIRES.timestamp())}", f"Expires={int(EXPIRES.timestamp()) + 1}"
    )
    assert verify_signed_url(later, public, "KPAIR", now=now) == "signature does not match"
    sha1 = url.replace("&Hash-Algorithm=SHA256", "")
    assert verify_signed_url(sha1, public, "KPAIR", now=now) == "signature does not match"
    wrong_key = private_key("ecdsa" if kind == "rsa" else "rsa").public_key()
    assert verify_signed_url(url, wrong_key, "KPAIR", now=now) == "signature does not match"
