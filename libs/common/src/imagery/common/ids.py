"""Image ids are ULIDs: 26 Crockford base32 characters, time-ordered."""

from __future__ import annotations

import re

from ulid import ULID

from imagery.common.errors import InvalidImageId

ULID_PATTERN = r"[0-7][0-9A-HJKMNP-TV-Z]{25}"
_ULID_RE = re.compile(rf"^{ULID_PATTERN}$")


def new_image_id() -> str:
    return str(ULID())


def is_image_id(value: str) -> bool:
    return _ULID_RE.fullmatch(value) is not None


def require_image_id(value: str, field: str = "image_id") -> str:
    """Return `value` if it is a well-formed image id, else raise InvalidImageId."""
    if is_image_id(value):
        return value
    raise InvalidImageId(field)
