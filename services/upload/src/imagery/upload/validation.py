"""What CreateUploadUrl accepts: exact-match content types and displayable file names."""

from __future__ import annotations

import unicodedata

from imagery.common.errors import FieldViolation, InvalidArgument
from imagery.common.formats import ALLOWED_CONTENT_TYPES

MAX_FILE_NAME_CHARS = 255
# Cc: C0/C1 controls (NUL, CR, LF, ESC, DEL...); Zl/Zp: line and paragraph separators.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})
_ALLOWED_LIST = ", ".join(ALLOWED_CONTENT_TYPES)


def validate_content_type(content_type: str) -> str:
    """Exact match only: no wildcards, no parameters, no case folding."""
    if content_type in ALLOWED_CONTENT_TYPES:
        return content_type
    shown = content_type[:100] or "(empty)"
    raise InvalidArgument(
        f"content_type {shown!r} is not accepted: send exactly one of {_ALLOWED_LIST}.",
        reason="UNSUPPORTED_CONTENT_TYPE",
        violations=[FieldViolation("content_type", f"must be exactly one of {_ALLOWED_LIST}")],
        metadata={"allowed": _ALLOWED_LIST},
    )


def validate_file_name(file_name: str) -> str:
    problem = _file_name_problem(file_name)
    if problem is None:
        return file_name
    raise InvalidArgument(
        f"file_name {problem}: send the original name, "
        f"1-{MAX_FILE_NAME_CHARS} printable characters.",
        reason="INVALID_FILE_NAME",
        violations=[FieldViolation("file_name", problem)],
    )


def _file_name_problem(file_name: str) -> str | None:
    if not file_name.strip():
        return "is empty"
    if len(file_name) > MAX_FILE_NAME_CHARS:
        return f"has {len(file_name)} characters, more than {MAX_FILE_NAME_CHARS}"
    for position, char in enumerate(file_name):
        if unicodedata.category(char) in _FORBIDDEN_CATEGORIES:
            return f"contains control character U+{ord(char):04X} at position {position}"
    return None
