"""What CreateUploadUrl accepts: exact-match content types, displayable file names, and a
declared size and checksum S3 can hold the upload to."""

from __future__ import annotations

import re
import unicodedata

from imagery.common.errors import InvalidArgument, InvalidFileName, UnsupportedContentType
from imagery.common.formats import ALLOWED_CONTENT_TYPES

MAX_FILE_NAME_CHARS = 255
# Cc: C0/C1 controls (NUL, CR, LF, ESC, DEL...); Zl/Zp: line and paragraph separators.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})
_SHA256 = re.compile(r"[0-9a-f]{64}")
UPLOAD_METHODS = ("PUT", "POST")


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


def validate_upload_method(method: str) -> str:
    """ "" is PUT, the default."""
    if method in ("", *UPLOAD_METHODS):
        return method or "PUT"
    raise InvalidArgument(
        "upload_method", f"is {method[:20]!r}", 'send "PUT" (the default) or "POST" (browsers)'
    )


def validate_declared_size(size_bytes: int | None, maximum: int) -> int | None:
    if size_bytes is None:
        return None
    if size_bytes < 1:
        raise InvalidArgument("size_bytes", f"is {size_bytes}", "declare the size, 1 or more")
    if size_bytes > maximum:
        raise InvalidArgument(
            "size_bytes",
            f"is {size_bytes}, above the project's maximum of {maximum} bytes",
            "upload a smaller file (or ask for a larger max_upload_bytes)",
        )
    return size_bytes


def validate_sha256(sha256: str) -> str | None:
    """ "" is "not declared"."""
    if not sha256:
        return None
    if _SHA256.fullmatch(sha256):
        return sha256
    raise InvalidArgument(
        "sha256",
        f"is not 64 lower-case hex characters ({len(sha256)} characters given)",
        "send hashlib.sha256(data).hexdigest() of the exact bytes you upload",
    )
