"""API keys: `imk_<id>_<secret>`. The id (16 characters, public) finds the key's row; the
secret is 256 random bits. Only the SHA-256 of the whole key is stored: a key this random
needs no slow hash, and a stolen table lets nobody call imagery."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from typing import NamedTuple

KEY_PREFIX = "imk_"
_KEY_RE = re.compile(r"^imk_([a-z2-7]{16})_([A-Za-z0-9_-]{43})$")


class NewKey(NamedTuple):
    key_id: str
    secret: str  # the whole key, shown once
    secret_hash: bytes


def new_key() -> NewKey:
    key_id = base64.b32encode(secrets.token_bytes(10)).decode().lower()
    secret = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    return NewKey(key_id, secret, hash_key(secret))


def hash_key(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def key_id_of(secret: str) -> str | None:
    """The id of a well-formed key, else None."""
    match = _KEY_RE.fullmatch(secret)
    return match.group(1) if match else None


def matches(secret: str, secret_hash: bytes) -> bool:
    return hmac.compare_digest(hash_key(secret), secret_hash)
