"""The fake's validation rules and refusals, as imagery states them (protos/imagery/v1): the
same status codes, ErrorInfo reasons, metadata keys and field violations."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

import grpc

ALLOWED_CONTENT_TYPES = ("image/jpeg", "image/png", "image/webp", "image/avif", "image/gif")
MAX_FILE_NAME_CHARS = 255
MAX_URL_BATCH = 50
MAX_IMAGE_BATCH = 100
MAX_VARIANTS = 10
MAX_LABELS = 64
# imagery's defaults for what a project may accept (MAX_IMAGE_SIDE, MAX_IMAGE_PIXELS,
# MAX_IMAGE_FRAMES): the most an upload's own limits may ask for.
PROJECT_LIMITS = {
    "max_width": 10_000,
    "max_height": 10_000,
    "max_pixels": 40_000_000,
    "max_frames": 100,
}
_ULID = re.compile(r"[0-7][0-9A-HJKMNP-TV-Z]{25}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_LABEL_KEY = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_LABEL_VALUE = re.compile(r"[a-z0-9_-]{0,63}")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


class Refusal(Exception):
    """A call refused with `code` and an ErrorInfo `reason` (and what else imagery sends)."""

    def __init__(
        self,
        code: grpc.StatusCode,
        reason: str,
        message: str,
        *,
        metadata: Mapping[str, str] | None = None,
        violations: Sequence[tuple[str, str]] = (),
        retry_delay: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.metadata = dict(metadata or {})
        self.violations = list(violations)
        self.retry_delay = retry_delay


def invalid(field: str, problem: str, fix: str, reason: str = "INVALID_ARGUMENT") -> Refusal:
    return Refusal(
        grpc.StatusCode.INVALID_ARGUMENT,
        reason,
        f"{field} {problem}: {fix}.",
        violations=[(field, problem)],
    )


def not_found(image_id: str) -> Refusal:
    return Refusal(
        grpc.StatusCode.NOT_FOUND,
        "IMAGE_NOT_FOUND",
        f"No image has id {image_id}: check the id returned by CreateUploadUrl.",
        metadata={"image_id": image_id},
    )


def require_image_id(value: str, field: str = "image_id") -> str:
    if _ULID.fullmatch(value):
        return value
    raise invalid(
        field,
        "is not a ULID (26 characters of Crockford base32)",
        "send the id returned by CreateUploadUrl",
        "INVALID_IMAGE_ID",
    )


def batch(ids: Sequence[str], most: int) -> list[str]:
    """Duplicates collapsed, first appearance kept, 1 to `most`, each an image id."""
    if not ids:
        raise invalid(
            "image_ids", f"must contain 1 to {most} ids", "send at least one", "NO_IMAGE_IDS"
        )
    unique = list(dict.fromkeys(ids))
    if len(unique) > most:
        raise invalid(
            "image_ids", f"at most {most} distinct ids", "split the call", "TOO_MANY_IMAGE_IDS"
        )
    for index, value in enumerate(ids):
        require_image_id(value, f"image_ids[{index}]")
    return unique


def content_type(value: str, allowed: Sequence[str]) -> str:
    if value in allowed:
        return value
    names = ", ".join(allowed)
    refusal = invalid(
        "content_type",
        f"must be exactly one of {names}",
        "send one of them",
        "UNSUPPORTED_CONTENT_TYPE",
    )
    refusal.metadata["allowed"] = names
    return _raise(refusal)


def file_name(value: str) -> str:
    problem = None
    if not value.strip():
        problem = "is empty"
    elif len(value) > MAX_FILE_NAME_CHARS:
        problem = f"has {len(value)} characters, more than {MAX_FILE_NAME_CHARS}"
    elif any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in value):
        problem = "contains a control character"
    if problem is None:
        return value
    return _raise(invalid("file_name", problem, "send the original name", "INVALID_FILE_NAME"))


def declared(size: int | None, sha256: str, maximum: int) -> None:
    if size is not None and not 1 <= size <= maximum:
        raise invalid("size_bytes", f"is {size}", f"declare 1 to {maximum} bytes")
    if sha256 and not _SHA256.fullmatch(sha256):
        raise invalid("sha256", "is not 64 lower-case hex characters", "send hexdigest()")


def labels(values: Mapping[str, str], field: str = "labels") -> dict[str, str]:
    if len(values) > MAX_LABELS:
        raise invalid(field, f"has {len(values)} entries", f"send at most {MAX_LABELS}")
    for key in sorted(values):
        if not _LABEL_KEY.fullmatch(key) or not _LABEL_VALUE.fullmatch(values[key]):
            raise invalid(f'{field}["{key[:70]}"]', "is not a valid label", "see Image.labels")
    return dict(values)


def request_id(value: str) -> str:
    if not value or _REQUEST_ID.fullmatch(value):
        return value
    raise invalid("request_id", "is not 1-64 letters, digits, '.', '_', ':' or '-'", "send a UUID")


def upload_limits(message: Any) -> dict[str, Any] | None:
    """An UploadLimits message as imagery checks it: each at most the project's, 0 (or an
    unset allow_animation) the project's; None when it asks for nothing."""
    kept: dict[str, Any] = {}
    for name, ceiling in PROJECT_LIMITS.items():
        value = getattr(message, name)
        if value < 0:
            raise invalid(f"limits.{name}", f"is {value}", "send 0 (the project's) or more")
        if value > ceiling:
            raise invalid(
                f"limits.{name}",
                f"is {value}, above the project's {name} of {ceiling}",
                f"ask for at most {ceiling}, or send 0 for the project's",
            )
        if value:
            kept[name] = value
    if message.HasField("allow_animation") and not message.allow_animation:
        if kept.get("max_frames", 0) > 1:
            raise invalid(
                "limits.max_frames",
                f"is {kept['max_frames']} while allow_animation is false",
                "send 0 or 1, or allow animation",
            )
        kept["allow_animation"] = False
    return kept or None


def outside(limits: Mapping[str, Any] | None, width: int, height: int, frames: int) -> bool:
    """Outside an upload's own limits (imagery fails it with DIMENSIONS_EXCEEDED)."""
    if not limits:
        return False
    most_frames = 1 if limits.get("allow_animation") is False else limits.get("max_frames")
    return (
        width > limits.get("max_width", width)
        or height > limits.get("max_height", height)
        or width * height > limits.get("max_pixels", width * height)
        or frames > (most_frames or frames)
    )


def variants(variant: str, names: Sequence[str], presets: Sequence[str]) -> list[str]:
    wanted = list(dict.fromkeys([variant, *names] if variant else names))
    if len(wanted) > MAX_VARIANTS:
        raise invalid("variants", f"names {len(wanted)} presets", f"at most {MAX_VARIANTS}")
    for name in wanted or [variant]:
        preset(name, presets)
    return wanted


def preset(name: str, presets: Sequence[str]) -> str:
    if name in presets:
        return name
    names = ", ".join(presets)
    refusal = invalid("variant", f"must be one of {names}", "ask for one", "UNKNOWN_VARIANT")
    refusal.metadata["available"] = names
    return _raise(refusal)


def _raise(refusal: Refusal) -> str:
    raise refusal
