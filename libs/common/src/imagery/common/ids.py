"""Image ids are ULIDs: 26 Crockford base32 characters, time-ordered, with 80 random bits
drawn afresh for every id. (The usual monotonic ULID adds one to the previous id within a
millisecond, so an id made just after a caller's own could be guessed from it.)"""

from __future__ import annotations

import re
import secrets
import time

from ulid import ULID

from imagery.common.errors import InvalidImageId

ULID_PATTERN = r"[0-7][0-9A-HJKMNP-TV-Z]{25}"
_ULID_RE = re.compile(rf"^{ULID_PATTERN}$")


def new_image_id() -> str:
    millis = time.time_ns() // 1_000_000
    return str(ULID.from_bytes(millis.to_bytes(6, "big") + secrets.token_bytes(10)))


def is_image_id(value: str) -> bool:
    return _ULID_RE.fullmatch(value) is not None


_SHA256_RE = re.compile(r"[0-9a-f]{64}")


def is_sha256(value: str) -> bool:
    """A SHA-256 as imagery writes one: 64 lower-case hex digits."""
    return _SHA256_RE.fullmatch(value) is not None


def require_image_id(value: str, field: str = "image_id") -> str:
    """Return `value` if it is a well-formed image id, else raise InvalidImageId."""
    if is_image_id(value):
        return value
    raise InvalidImageId(field)
