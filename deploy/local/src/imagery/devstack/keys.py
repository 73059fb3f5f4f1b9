"""A local CloudFront signing key pair (ECDSA P-256 by default; RSA-2048 on request)."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

LOCAL_KEY_PAIR_ID = "KLOCALDEVSTACK"


def ensure_key_pair(directory: Path, kind: str = "ecdsa") -> tuple[Path, Path]:
    """Create (once) and return (private key file, public key file)."""
    directory.mkdir(parents=True, exist_ok=True)
    private_file, public_file = directory / f"{kind}-private.pem", directory / f"{kind}-public.pem"
    if not private_file.exists():
        key = (
            ec.generate_private_key(ec.SECP256R1())
            if kind == "ecdsa"
            else rsa.generate_private_key(65537, 2048)
        )
        private_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        private_file.chmod(0o600)
        public_file.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    return private_file, public_file
