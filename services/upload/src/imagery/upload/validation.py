"""What CreateUploadUrl accepts: exact-match content types, displayable file names, a
declared size and checksum S3 can hold the upload to, labels, request ids and limits no
looser than the project's; and what UpdateImage's mask may name."""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping, Sequence

from imagery.common.errors import InvalidArgument, InvalidFileName, UnsupportedContentType
from imagery.common.formats import DEFAULT_CONTENT_TYPES
from imagery.common.ids import is_sha256
from imagery.common.tenancy import EffectiveSettings
from imagery.common.upload_limits import UploadLimits

MAX_FILE_NAME_CHARS = 255
# Cc: C0/C1 controls (NUL, CR, LF, ESC, DEL...); Zl/Zp: line and paragraph separators.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})
UPLOAD_METHODS = ("PUT", "POST")
MAX_LABELS = 64
_LABEL_KEY = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_LABEL_VALUE = re.compile(r"[a-z0-9_-]{0,63}")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# What UpdateImage can change ("*" names them all).
UPDATABLE_IMAGE_FIELDS = ("labels",)


def validate_content_type(
    content_type: str, allowed: tuple[str, ...] = DEFAULT_CONTENT_TYPES
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
    if is_sha256(sha256):
        return sha256
    raise InvalidArgument(
        "sha256",
        f"is not 64 lower-case hex characters ({len(sha256)} characters given)",
        "send hashlib.sha256(data).hexdigest() of the exact bytes you upload",
    )


def validate_labels(labels: Mapping[str, str], field: str = "labels") -> dict[str, str]:
    """`Image.labels`' rules: at most 64; keys 1-63 and values 0-63 of lower-case letters,
    digits, `_` and `-`, keys starting with a letter. The first bad entry (in key order) is
    the one named."""
    if len(labels) > MAX_LABELS:
        raise InvalidArgument(
            field, f"has {len(labels)} entries, more than {MAX_LABELS}", "send at most 64 labels"
        )
    for key in sorted(labels):
        entry = f"{field}[{json.dumps(key[:70], ensure_ascii=False)}]"
        if not _LABEL_KEY.fullmatch(key):
            raise InvalidArgument(
                entry,
                "is not a valid label key",
                "use 1-63 lower-case letters, digits, _ and -, starting with a letter",
            )
        if not _LABEL_VALUE.fullmatch(labels[key]):
            raise InvalidArgument(
                entry,
                f"has the value {labels[key][:70]!r}, which is not a valid label value",
                "use 0-63 lower-case letters, digits, _ and -",
            )
    return dict(labels)


def validate_request_id(request_id: str) -> str | None:
    """ "" is "no request id"."""
    if not request_id:
        return None
    if _REQUEST_ID.fullmatch(request_id):
        return request_id
    raise InvalidArgument(
        "request_id",
        f"is not 1-64 letters, digits, '.', '_', ':' or '-' ({len(request_id)} characters given)",
        "send a UUID, made once per request and sent again only with its retries",
    )


def validate_update_mask(
    paths: Sequence[str], updatable: Sequence[str] = UPDATABLE_IMAGE_FIELDS
) -> tuple[str, ...]:
    """AIP-134 as UpdateProject applies it: the paths named, each one that can change; "*"
    names every field that can."""
    names = ", ".join(updatable)
    if not paths:
        raise InvalidArgument(
            "update_mask", "is empty", f'name the fields to change: {names} (or "*")'
        )
    if "*" in paths:
        return tuple(updatable)
    unknown = [p for p in paths if p not in updatable]
    if unknown:
        raise InvalidArgument(
            "update_mask",
            f"names {unknown[0][:80]!r}, which cannot be changed",
            f'name only {names} (or "*")',
        )
    return tuple(dict.fromkeys(paths))


def validate_upload_limits(
    limits: UploadLimits | None,
    settings: EffectiveSettings,
    *,
    max_pixels: int,
    max_frames: int,
    field: str = "limits",
) -> UploadLimits | None:
    """An upload's own limits, each at most the project's (`max_pixels` and `max_frames` are
    the deployment's MAX_IMAGE_PIXELS and MAX_IMAGE_FRAMES, which no project setting lowers);
    0 or None is "the project's". None when nothing is asked for."""
    if limits is None:
        return None
    project = {
        "max_width": settings.max_width,
        "max_height": settings.max_height,
        "max_pixels": max_pixels,
        "max_frames": max_frames,
    }
    kept: dict[str, int | None] = {}
    for name, ceiling in project.items():
        value = getattr(limits, name)
        if value is not None and value < 0:
            raise InvalidArgument(
                f"{field}.{name}", f"is {value}", "send 0 (the project's) or more"
            )
        if value is not None and value > ceiling:
            raise InvalidArgument(
                f"{field}.{name}",
                f"is {value}, above the project's {name} of {ceiling}",
                f"ask for at most {ceiling}, or send 0 for the project's",
            )
        kept[name] = value or None
    minimums = {"max_width": settings.min_width, "max_height": settings.min_height}
    for name, minimum in minimums.items():
        value = kept[name]
        if value is not None and value < minimum:
            side = "min_" + name.removeprefix("max_")
            raise InvalidArgument(
                f"{field}.{name}",
                f"is {value}, below the project's {side} of {minimum}",
                f"ask for at least {minimum}: no image could pass both",
            )
    animation = None if limits.allow_animation is not False else False
    frames = kept["max_frames"]
    if animation is False and frames is not None and frames > 1:
        raise InvalidArgument(
            f"{field}.max_frames",
            f"is {frames} while allow_animation is false",
            "send 0 or 1, or allow animation",
        )
    checked = UploadLimits(**kept, allow_animation=animation)
    return None if checked.empty else checked
