"""What CreateUploadUrl accepts: exact-match content types and displayable file names."""

from __future__ import annotations

import unicodedata

from imagery.common.errors import InvalidFileName, UnsupportedContentType
from imagery.common.formats import ALLOWED_CONTENT_TYPES

MAX_FILE_NAME_CHARS = 255
# Cc: C0/C1 controls (NUL, CR, LF, ESC, DEL...); Zl/Zp: line and paragraph separators.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})


def validate_content_type(
    content_type: str, allowed: tuple[str, ...] = tuple(ALLOWED_CONTENT_TYPES)
) -> str:
    """Exact match only (no wildcards, no parameters, no case folding) against what the
    project accepts."""
    if content_type in allowed:
        return content_type
    raise UnsupportedContentType(content_type, allowed)


def validate_file_name(file_name: str) -> str:
    problem = _file_name_problem(file_name)
    if problem is None:
        return file_name
    raise InvalidFileName(problem, MAX_FILE_NAME_CHARS)


def _file_name_problem(file_name: str) -> str | None:
    if not file_name.strip():
        return "is empty"
    if len(file_name) > MAX_FILE_NAME_CHARS:
        return f"has {len(file_name)} characters, more than {MAX_FILE_NAME_CHARS}"
    for position, char in enumerate(file_name):
        if unicodedata.category(char) in _FORBIDDEN_CATEGORIES:
            return f"contains control character U+{ord(char):04X} at position {position}"
    return None
