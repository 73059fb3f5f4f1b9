"""Image ids are ULIDs: 26 Crockford base32 characters, time-ordered."""

from __future__ import annotations

import re

from ulid import ULID

from imagery.common.errors import FieldViolation, InvalidArgument

ULID_PATTERN = r"[0-7][0-9A-HJKMNP-TV-Z]{25}"
_ULID_RE = re.compile(rf"^{ULID_PATTERN}$")
UPLOAD_KEY_RE = re.compile(rf"^uploads/({ULID_PATTERN})$")


def new_image_id() -> str:
    return str(ULID())


def is_image_id(value: str) -> bool:
    return _ULID_RE.fullmatch(value) is not None


def require_image_id(value: str, field: str = "image_id") -> str:
    """Return `value` if it is a well-formed image id, else raise INVALID_IMAGE_ID."""
    if is_image_id(value):
        return value
    raise InvalidArgument(
        f"{field} must be the 26-character id returned by CreateUploadUrl.",
        reason="INVALID_IMAGE_ID",
        violations=[FieldViolation(field, "not a ULID (26 characters of Crockford base32)")],
    )


def upload_key(image_id: str) -> str:
    return f"uploads/{image_id}"


def image_id_from_upload_key(key: str) -> str | None:
    match = UPLOAD_KEY_RE.fullmatch(key)
    return match.group(1) if match else None
