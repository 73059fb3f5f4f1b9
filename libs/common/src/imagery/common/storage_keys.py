"""Where every object lives in the bucket; nothing else builds a key.

Every key sits under a scope: the prefix of one tenant's objects. Today there is one scope
for everything (`GLOBAL_SCOPE`, no prefix); the scope is an argument everywhere so that
scoping keys per project changes what callers pass, not how keys are built.
"""

from __future__ import annotations

import re

from imagery.common.formats import FORMATS
from imagery.common.ids import ULID_PATTERN

GLOBAL_SCOPE = ""
_UPLOAD_KEY_RE = re.compile(rf"^(.*)uploads/({ULID_PATTERN})$")


def upload_key(scope: str, image_id: str) -> str:
    """Where the client's presigned PUT lands: verified, then deleted."""
    return f"{scope}uploads/{image_id}"


def original_key(scope: str, sha256: str) -> str:
    """The verified original, kept so variants can be made again."""
    return f"{scope}originals/{sha256}"


def variant_key(scope: str, sha256: str, name: str, fmt: str) -> str:
    return f"{scope}variants/{sha256}/{name}.{FORMATS[fmt].extension}"


def image_id_from_upload_key(scope: str, key: str) -> str | None:
    match = _UPLOAD_KEY_RE.fullmatch(key)
    return match.group(2) if match and match.group(1) == scope else None


# Variants never change once written (their keys are content addresses), so caches may keep them.
VARIANT_CACHE_CONTROL = "public, max-age=31536000, immutable"
