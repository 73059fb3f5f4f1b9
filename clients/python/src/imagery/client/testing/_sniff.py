"""What the fake's "processor" learns from the bytes without decoding them: the format (magic
bytes) and the dimensions (the header), enough to answer like imagery for well-formed files,
and with imagery's failure reasons for empty, unknown or mislabelled ones."""

from __future__ import annotations

import struct
from typing import NamedTuple

CONTENT_TYPES = {
    "jpeg": "image/jpeg",
    "png": "image/png",
    "webp": "image/webp",
    "avif": "image/avif",
    "gif": "image/gif",
}


class Sniffed(NamedTuple):
    format: str
    width: int
    height: int
    alpha: bool


class Rejected(Exception):
    """The bytes would end FAILED with `reason`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def sniff(body: bytes, content_type: str) -> Sniffed:
    if not body:
        raise Rejected("EMPTY")
    kind = _format(body)
    if kind is None:
        raise Rejected("UNSUPPORTED_FORMAT")
    if CONTENT_TYPES[kind] != content_type:
        raise Rejected("CONTENT_TYPE_MISMATCH")
    try:
        width, height, alpha = _READERS[kind](body)
    except (struct.error, IndexError, ValueError):
        raise Rejected("CORRUPT") from None
    if width <= 0 or height <= 0:
        raise Rejected("CORRUPT")
    return Sniffed(kind, width, height, alpha)


def _format(body: bytes) -> str | None:
    if body.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if body.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if body[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if body[:4] == b"RIFF" and body[8:12] == b"WEBP":
        return "webp"
    if body[4:8] == b"ftyp" and body[8:12] in (b"avif", b"avis"):
        return "avif"
    return None


def _png(body: bytes) -> tuple[int, int, bool]:
    if body[12:16] != b"IHDR":
        raise ValueError("no IHDR")
    width, height = struct.unpack(">II", body[16:24])
    colour = body[25]
    return width, height, colour in (4, 6) or b"tRNS" in body


def _gif(body: bytes) -> tuple[int, int, bool]:
    width, height = struct.unpack("<HH", body[6:10])
    control = body.find(b"\x21\xf9\x04")  # a graphic control extension: transparency?
    return width, height, control != -1 and bool(body[control + 3] & 1)


def _jpeg(body: bytes) -> tuple[int, int, bool]:
    at = 2
    while at + 9 < len(body):
        if body[at] != 0xFF:
            raise ValueError("not a marker")
        marker = body[at + 1]
        length = struct.unpack(">H", body[at + 2 : at + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", body[at + 5 : at + 9])
            return width, height, False
        at += 2 + length
    raise ValueError("no frame header")


def _webp(body: bytes) -> tuple[int, int, bool]:
    chunk = body[12:16]
    if chunk == b"VP8X":
        width = int.from_bytes(body[24:27], "little") + 1
        height = int.from_bytes(body[27:30], "little") + 1
        return width, height, bool(body[20] & 0x10)
    if chunk == b"VP8L":
        bits = int.from_bytes(body[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, bool((bits >> 28) & 1)
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", body[26:30])
        return width & 0x3FFF, height & 0x3FFF, False
    raise ValueError("unknown WebP chunk")


def _avif(body: bytes) -> tuple[int, int, bool]:
    at = body.index(b"ispe")  # image spatial extents: version/flags, width, height
    width, height = struct.unpack(">II", body[at + 8 : at + 16])
    return width, height, False


_READERS = {"png": _png, "gif": _gif, "jpeg": _jpeg, "webp": _webp, "avif": _avif}


def frames(body: bytes, kind: str) -> int:
    """The frames of an animation (GIF image descriptors, APNG's acTL, WebP's ANMF chunks);
    1 for anything else, and for what the fake cannot read."""
    try:
        if kind == "gif":
            return max(1, _gif_frames(body))
        if kind == "png" and (at := body.find(b"acTL")) != -1:
            return max(1, int(struct.unpack(">I", body[at + 4 : at + 8])[0]))
        if kind == "webp":
            return max(1, _webp_frames(body))
    except (struct.error, IndexError, ValueError):
        pass
    return 1


def _gif_frames(body: bytes) -> int:
    at, count = 13, 0
    if body[10] & 0x80:  # a global colour table
        at += 3 << ((body[10] & 7) + 1)
    while at < len(body) and body[at] != 0x3B:
        if body[at] == 0x2C:  # an image descriptor, its colour table, LZW code size, data
            count += 1
            flags = body[at + 9]
            at += 10 + ((3 << ((flags & 7) + 1)) if flags & 0x80 else 0) + 1
        elif body[at] == 0x21:  # an extension: label, then data sub-blocks
            at += 2
        else:
            raise ValueError("not a GIF block")
        while body[at]:  # data sub-blocks, up to the terminator
            at += 1 + body[at]
        at += 1
    return count


def _webp_frames(body: bytes) -> int:
    at, count = 12, 0
    while at + 8 <= len(body):
        size = int.from_bytes(body[at + 4 : at + 8], "little")
        count += body[at : at + 4] == b"ANMF"
        at += 8 + size + (size & 1)
    return count
