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
_RETAINED_KEY_RE = re.compile(rf"^(.*)retained/({ULID_PATTERN})$")

# Failure reasons that may not be the file's fault: the upload's bytes are kept under
# `retained/` for a while, so `imagery-admin reprocess` can run them again.
RETAINABLE_REASONS = frozenset(
    {"CPU_LIMIT", "PROCESSING_TIMEOUT", "MEMORY_LIMIT", "RETRIES_EXHAUSTED"}
)


def upload_key(scope: str, image_id: str) -> str:
    """Where the client's presigned PUT lands: verified, then deleted."""
    return f"{upload_prefix(scope)}{image_id}"


def retained_key(scope: str, image_id: str) -> str:
    """The bytes of an upload that failed for a retainable reason, outside the `uploads/`
    lifecycle rule (a `retained/` rule of its own expires them)."""
    return f"{retained_prefix(scope)}{image_id}"


def retained_prefix(scope: str) -> str:
    return f"{scope}retained/"


def image_id_from_retained_key(scope: str, key: str) -> str | None:
    match = _RETAINED_KEY_RE.fullmatch(key)
    return match.group(2) if match and match.group(1) == scope else None


def original_key(scope: str, sha256: str) -> str:
    """The verified original, kept so variants can be made again."""
    return f"{scope}originals/{sha256}"


def variant_key(scope: str, sha256: str, name: str, fmt: str, version: int = 0) -> str:
    """A variant of one profile version: version 0 (the deployment's default profile) keeps
    the layout from before profiles; a later version has a folder of its own, so no key is
    ever written twice with other bytes."""
    folder = f"v{version}/" if version else ""
    return f"{scope}variants/{sha256}/{folder}{name}.{FORMATS[fmt].extension}"


def variants_prefix(scope: str, sha256: str) -> str:
    """The folder of every variant of the content, of every profile version."""
    return f"{scope}variants/{sha256}/"


_CONTENT_KEY_RE = re.compile(
    r"^(.*)(?:originals/([0-9a-f]{64})|variants/([0-9a-f]{64})/(?:v[1-9][0-9]*/)?[^/]+)$"
)


def upload_prefix(scope: str) -> str:
    return f"{scope}uploads/"


def content_prefixes(scope: str) -> tuple[str, str]:
    """Where content (originals, then variants) lives: what the reconciler lists."""
    return f"{scope}originals/", f"{scope}variants/"


def sha256_from_content_key(scope: str, key: str) -> str | None:
    """The content an original's or a variant's key belongs to."""
    match = _CONTENT_KEY_RE.fullmatch(key)
    if match is None or match.group(1) != scope:
        return None
    return match.group(2) or match.group(3)


def image_id_from_upload_key(scope: str, key: str) -> str | None:
    match = _UPLOAD_KEY_RE.fullmatch(key)
    return match.group(2) if match and match.group(1) == scope else None


# Variants never change once written (their keys are content addresses), so caches may keep them.
VARIANT_CACHE_CONTROL = "public, max-age=31536000, immutable"
