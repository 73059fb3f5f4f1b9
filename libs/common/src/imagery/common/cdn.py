"""CloudFront canned-policy signed URLs: signing (DeliveryService) and verification (the local
CloudFront stand-in, and tests). The policy encoding and URL layout are botocore's
`CloudFrontSigner`; the key handling and signatures are `cryptography`'s.

Both key types CloudFront accepts are supported, detected from the PEM: RSA-2048 and ECDSA
P-256. SHA-1 is CloudFront's default hash; SHA-256 adds `Hash-Algorithm=SHA256` to the URL.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from botocore.signers import CloudFrontSigner
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

HASHES: dict[str, type[hashes.HashAlgorithm]] = {"SHA1": hashes.SHA1, "SHA256": hashes.SHA256}
SIGNING_PARAMS = ("Expires", "Policy", "Signature", "Key-Pair-Id", "Hash-Algorithm")
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


class SigningKeyError(ValueError):
    """The configured key cannot sign CloudFront URLs; the message says why."""


def load_private_key(pem: bytes) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(f"not a readable unencrypted PEM private key ({exc})") from None
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size != 2048:
            raise SigningKeyError(f"RSA key has {key.key_size} bits; CloudFront requires RSA-2048")
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise SigningKeyError(f"EC key is on {key.curve.name}; CloudFront requires ECDSA P-256")
        return key
    raise SigningKeyError(
        f"{type(key).__name__} keys are not accepted: use RSA-2048 or ECDSA P-256"
    )


def key_type(key: PrivateKey | PublicKey) -> str:
    return "RSA" if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey) else "ECDSA"


def signer_for(key: PrivateKey, hash_algorithm: str) -> Callable[[bytes], bytes]:
    algorithm = HASHES[hash_algorithm]()
    if isinstance(key, rsa.RSAPrivateKey):
        pkcs1 = padding.PKCS1v15()
        return lambda message: key.sign(message, pkcs1, algorithm)
    ecdsa = ec.ECDSA(algorithm)  # built once, not per signature
    return lambda message: key.sign(message, ecdsa)


class CloudFrontUrlBuilder:
    """Signs `{base_url}/{object_key}` until a given time. Thread-safe: nothing mutable."""

    def __init__(
        self, base_url: str, key_pair_id: str, key: PrivateKey, hash_algorithm: str = "SHA1"
    ) -> None:
        self.base_url = base_url
        self.key_pair_id = key_pair_id
        self.key = key
        self.hash_algorithm = hash_algorithm
        self._signer = CloudFrontSigner(key_pair_id, signer_for(key, hash_algorithm))
        self._suffix = "" if hash_algorithm == "SHA1" else f"&Hash-Algorithm={hash_algorithm}"

    def sign(self, object_key: str, expires: datetime) -> str:
        url = f"{self.base_url}/{object_key}"
        return self._signer.generate_presigned_url(url, date_less_than=expires) + self._suffix


def base_url_for(domain: str) -> str:
    """`d111.cloudfront.net` -> `https://d111.cloudfront.net`; a scheme, if given, is kept
    (the local stand-in is plain http)."""
    domain = domain.rstrip("/")
    return domain if "://" in domain else f"https://{domain}"
