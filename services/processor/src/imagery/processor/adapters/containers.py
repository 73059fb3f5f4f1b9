"""Frame count and canvas size of an animated image, read from its container alone.

Pillow counts the frames of a GIF by seeking through them, and seeking decodes every frame
before it onto the full canvas: a small GIF with a huge logical screen and many tiny frames
costs seconds of CPU before the frame and pixel limits are even checked. This module walks
the container structure instead (stdlib only: `struct`, and `re` to skip stray bytes), so an
over-budget file is refused before any pixel is decoded:

- GIF: the block structure (header, logical screen descriptor, colour tables, extensions,
  image descriptors), skipping every data sub-block chain by its length bytes, LZW data
  untouched. Frames are image descriptors; the canvas is the logical screen grown to cover
  every frame rectangle, as Pillow grows it.
- PNG/APNG: chunks up to the first IDAT. The size is IHDR's; the frames are acTL's
  num_frames, or one without a valid acTL (Pillow's rule: a second acTL, or an out-of-range
  count, makes the file a still PNG).
- WebP: RIFF chunks. The size is the VP8X canvas, or the VP8/VP8L bitstream header's for a
  simple file; the frames are ANMF chunks, or one when there are none.
- AVIF, HEIC and HEIF: ISO-BMFF boxes, walked in `bmff.py`.

The frame count is exact up to `max_frames`; past it the walk stops and `max_frames + 1` is
returned, so the work for a file claiming any number of frames is bounded by the limit and
by `len(data)`. Nothing here allocates in proportion to a count read from the file.

Malformed bytes raise `ContainerError` (a `ValueError`) and nothing else. `None` means the
structure does not answer (a JPEG, a GIF without an image, an AVIF without `ispe`): the caller
then relies on the decoder's own header checks.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable

from imagery.processor.adapters.bmff import Budget, ContainerError, avif_budget, heif_budget

__all__ = ["ContainerError", "animation_budget"]


def animation_budget(data: bytes, fmt: str, *, max_frames: int) -> Budget | None:
    """(frames, width, height) of the canvas for a "gif", "png", "webp", "avif", "heic" or
    "heif" container, with frames capped at `max_frames + 1`; None for "jpeg" or when the
    structure gives no answer. Raises `ContainerError` on malformed bytes, `ValueError` on an
    unknown `fmt`."""
    if max_frames < 0:
        raise ValueError(f"max_frames must be >= 0, not {max_frames}")
    if fmt == "jpeg":
        return None
    parser = _PARSERS.get(fmt)
    if parser is None:
        raise ValueError(f"no container parser for {fmt!r}")
    result = parser(data, max_frames)
    if result is None:
        return None
    frames, width, height = result
    return min(frames, max_frames + 1), width, height


# GIF ----------------------------------------------------------------------------------------

_GIF_EXTENSION = 0x21
_GIF_IMAGE = 0x2C
_GIF_TRAILER = 0x3B
_GIF_INTRODUCER = re.compile(rb"[\x21\x2c\x3b]")
_GIF_SCREEN = struct.Struct("<HHB")  # width, height, flags (then background, aspect)
_GIF_DESCRIPTOR = struct.Struct("<HHHHB")  # left, top, width, height, flags


def _gif(data: bytes, max_frames: int) -> Budget | None:
    if data[:6] not in (b"GIF87a", b"GIF89a"):
        raise ContainerError("not a GIF: bad signature")
    if len(data) < 13:
        raise ContainerError("GIF truncated in the logical screen descriptor")
    width, height, flags = _GIF_SCREEN.unpack_from(data, 6)
    pos = 13 + _gif_color_table(flags)
    end = len(data)
    frames = 0
    while pos < end:
        block = data[pos]
        if block == _GIF_TRAILER:
            break
        if block == _GIF_EXTENSION:
            pos = _skip_sub_blocks(data, pos + 2)  # introducer, label
        elif block == _GIF_IMAGE:
            if pos + 1 + _GIF_DESCRIPTOR.size > end:
                break
            left, top, frame_width, frame_height, flags = _GIF_DESCRIPTOR.unpack_from(data, pos + 1)
            frames += 1
            width = max(width, left + frame_width)
            height = max(height, top + frame_height)
            if frames > max_frames:
                break
            pos += 1 + _GIF_DESCRIPTOR.size + _gif_color_table(flags)
            pos = _skip_sub_blocks(data, pos + 1)  # LZW minimum code size, then the data
        else:
            # Decoders skip stray bytes between blocks; so does the count, in one jump.
            found = _GIF_INTRODUCER.search(data, pos + 1)
            pos = found.start() if found is not None else end
    if frames == 0:
        return None
    return frames, width, height


def _gif_color_table(flags: int) -> int:
    return 3 << ((flags & 0x07) + 1) if flags & 0x80 else 0


def _skip_sub_blocks(data: bytes, pos: int) -> int:
    """The offset after a chain of sub-blocks (length byte, bytes) ended by a zero length;
    past the end of `data` when the chain is cut short."""
    end = len(data)
    while pos < end:
        size = data[pos]
        pos += 1 + size
        if size == 0:
            return pos
    return end + 1


# PNG ----------------------------------------------------------------------------------------

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHUNK = struct.Struct(">I4s")
_U32_PAIR = struct.Struct(">II")
_APNG_MAX_FRAMES = 0x80000000


def _png(data: bytes, max_frames: int) -> Budget | None:
    if not data.startswith(_PNG_SIGNATURE):
        raise ContainerError("not a PNG: bad signature")
    end = len(data)
    pos = len(_PNG_SIGNATURE)
    size: tuple[int, int] | None = None
    frames: int | None = None
    while pos + _PNG_CHUNK.size <= end:
        length, kind = _PNG_CHUNK.unpack_from(data, pos)
        if not kind.isalpha():
            raise ContainerError(f"PNG chunk type {kind!r} is not four letters")
        if kind == b"IDAT":
            break  # acTL counts only before the image data
        body = pos + _PNG_CHUNK.size
        if kind == b"IHDR":
            if length < 13 or body + 13 > end:
                raise ContainerError("PNG IHDR chunk truncated")
            size = _U32_PAIR.unpack_from(data, body)
        elif kind == b"acTL":
            if length < 8 or body + 8 > end:
                raise ContainerError("APNG acTL chunk truncated")
            declared = int.from_bytes(data[body : body + 4], "big")
            if frames is not None:
                frames = None  # a second acTL: not a valid APNG, shown as a still
            elif 0 < declared <= _APNG_MAX_FRAMES:
                frames = declared
        pos = body + length + 4  # data, then CRC (not checked)
    if size is None:
        return None
    return frames or 1, size[0], size[1]


# WebP ---------------------------------------------------------------------------------------

_RIFF_CHUNK = struct.Struct("<4sI")
_VP8_START_CODE = b"\x9d\x01\x2a"
_VP8L_SIGNATURE = 0x2F


def _webp(data: bytes, max_frames: int) -> Budget | None:
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise ContainerError("not a WebP: bad RIFF header")
    riff_end = min(8 + int.from_bytes(data[4:8], "little"), len(data))
    pos = 12
    if pos + _RIFF_CHUNK.size > riff_end:
        raise ContainerError("WebP has no chunk")
    kind, length = _RIFF_CHUNK.unpack_from(data, pos)
    body = pos + _RIFF_CHUNK.size
    if kind == b"VP8 ":
        return (1, *_vp8_size(data[body : min(body + length, riff_end)]))
    if kind == b"VP8L":
        return (1, *_vp8l_size(data[body : min(body + length, riff_end)]))
    if kind != b"VP8X":
        return None
    if length < 10 or body + 10 > riff_end:
        raise ContainerError("WebP VP8X chunk truncated")
    width = 1 + int.from_bytes(data[body + 4 : body + 7], "little")
    height = 1 + int.from_bytes(data[body + 7 : body + 10], "little")
    frames = 0
    while pos + _RIFF_CHUNK.size <= riff_end:
        kind, length = _RIFF_CHUNK.unpack_from(data, pos)
        if kind == b"ANMF":
            frames += 1
            if frames > max_frames:
                break
        pos += _RIFF_CHUNK.size + length + (length & 1)  # chunks are padded to even sizes
    return max(frames, 1), width, height


def _vp8_size(payload: bytes) -> tuple[int, int]:
    """A lossy key frame: 3-byte frame tag, start code, 14-bit width and height."""
    if len(payload) < 10:
        raise ContainerError("WebP VP8 frame header truncated")
    if payload[0] & 0x01 or payload[3:6] != _VP8_START_CODE:
        raise ContainerError("WebP VP8 bitstream does not start with a key frame")
    width, height = struct.unpack_from("<HH", payload, 6)
    return width & 0x3FFF, height & 0x3FFF


def _vp8l_size(payload: bytes) -> tuple[int, int]:
    """A lossless bitstream: signature byte, then width - 1 and height - 1 in 14 bits each."""
    if len(payload) < 5:
        raise ContainerError("WebP VP8L header truncated")
    if payload[0] != _VP8L_SIGNATURE:
        raise ContainerError("WebP VP8L bitstream has a bad signature")
    bits = int.from_bytes(payload[1:5], "little")
    return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)


_PARSERS: dict[str, Callable[[bytes, int], Budget | None]] = {
    "gif": _gif,
    "png": _png,
    "webp": _webp,
    "avif": avif_budget,
    "heic": heif_budget,
    "heif": heif_budget,
}
