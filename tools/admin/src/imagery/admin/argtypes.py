"""Argument types: each turns a command-line string into a value or a usage error (exit 2)
that says what would be accepted."""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime, timedelta

from imagery.common.errors import InvalidArgument
from imagery.common.ids import is_image_id
from imagery.common.tenancy import parse_scopes, require_project_id

_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def project_id(value: str) -> str:
    try:
        return require_project_id(value)
    except InvalidArgument as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def scopes(value: str) -> tuple[str, ...]:
    try:
        return tuple(sorted(parse_scopes(tuple(v.strip() for v in value.split(",") if v.strip()))))
    except InvalidArgument as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def count(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of 0 or more")
    return int(value)


def switch(value: str) -> bool:
    if value.lower() in ("true", "yes", "on", "1"):
        return True
    if value.lower() in ("false", "no", "off", "0"):
        return False
    raise argparse.ArgumentTypeError(f"{value!r} is not true or false")


def positive(value: str) -> int:
    number = count(value)
    if number == 0:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return number


def content_types(value: str) -> list[str]:
    types = [v.strip() for v in value.split(",") if v.strip()]
    if not types:
        raise argparse.ArgumentTypeError("name at least one content type, e.g. image/jpeg")
    return types


def expires_in(value: str) -> datetime:
    match = _DURATION.fullmatch(value.strip())
    if match is None or int(match.group(1)) == 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a duration such as 90m, 12h, 30d, 4w")
    return datetime.now(UTC) + timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def expire_time(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an ISO 8601 time such as 2030-01-31T00:00:00Z"
        ) from None
    if parsed.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{value!r} has no UTC offset: add Z or +HH:MM")
    return parsed.astimezone(UTC)


def identity(value: str) -> str:
    if not 1 <= len(value) <= 2048:
        raise argparse.ArgumentTypeError("an identity is 1-2048 characters")
    return value


def distance(value: str) -> int:
    if not value.isdigit() or int(value) > 64:
        raise argparse.ArgumentTypeError(f"{value!r} is not a distance in bits (0-64)")
    return int(value)


def image_id(value: str) -> str:
    if not is_image_id(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not an image id (26 characters, a ULID)")
    return value
