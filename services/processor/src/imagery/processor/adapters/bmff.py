"""ISO-BMFF containers (AVIF, HEIC, HEIF): frame count and largest size from the boxes
alone, for `containers.animation_budget`. Same contract: stdlib only, bounded by the frame
limit and by `len(data)`, nothing allocated in proportion to a count read from the file,
`ContainerError` for malformed bytes and nothing else, None when the structure does not
answer.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

Budget = tuple[int, int, int]  # frames, canvas width, canvas height


class ContainerError(ValueError):
    """The bytes are not a well-formed container of the format they were sniffed as."""


# Boxes ----------------------------------------------------------------------------------------

_BOX = struct.Struct(">I4s")
_U64 = struct.Struct(">Q")
_U32_PAIR = struct.Struct(">II")
_FULL_BOX = 4  # version and flags ahead of a full box's fields
_TKHD_SIZE_OFFSET = {0: 76, 1: 88}  # by version: width, height follow creation..matrix
_Box = tuple[bytes, int, int]  # type, start of the payload, end of the box


def _boxes(data: bytes, start: int, end: int) -> Iterator[_Box]:
    pos = start
    while pos + _BOX.size <= end:
        size, kind = _BOX.unpack_from(data, pos)
        header = _BOX.size
        if size == 1:
            if pos + header + _U64.size > end:
                raise ContainerError(f"box {kind!r} truncated in its 64-bit size")
            (size,) = _U64.unpack_from(data, pos + header)
            header += _U64.size
        elif size == 0:
            size = end - pos  # to the end of the enclosing box
        if size < header:
            raise ContainerError(f"box {kind!r} claims {size} bytes, less than its header")
        yield kind, pos + header, min(pos + size, end)
        pos += size


def _contents(box: _Box) -> tuple[int, int]:
    """Where a box's children lie: `meta` is a full box, its children follow version and
    flags."""
    kind, body, end = box
    return (body + _FULL_BOX if kind == b"meta" else body), end


def _first(data: bytes, parent: _Box | None, *kinds: bytes) -> dict[bytes, _Box]:
    """The first child of each named type, in one walk of the parent's children."""
    found: dict[bytes, _Box] = {}
    if parent is None:
        return found
    for box in _boxes(data, *_contents(parent)):
        if box[0] in kinds:
            found.setdefault(box[0], box)
            if len(found) == len(kinds):
                break
    return found


def _all(data: bytes, parent: _Box | None, kind: bytes) -> Iterator[_Box]:
    if parent is None:
        return iter(())
    return (box for box in _boxes(data, *_contents(parent)) if box[0] == kind)


def _descend(data: bytes, box: _Box | None, *kinds: bytes) -> _Box | None:
    """The box reached through the first child of each named type in turn."""
    for kind in kinds:
        box = _first(data, box, kind).get(kind)
    return box


# AVIF -----------------------------------------------------------------------------------------


def avif_budget(data: bytes, max_frames: int) -> Budget | None:
    """A still image: one frame of the largest `ispe` (meta/iprp/ipco). An image sequence
    (brand `avis` with a `moov`): the largest track's sample count (stsz, else the sum of
    stts) at the largest tkhd size, else the largest `ispe`."""
    root: _Box = (b"", 0, len(data))
    ftyp = next(_boxes(data, 0, len(data)), None)
    if ftyp is None or ftyp[0] != b"ftyp":
        raise ContainerError("not an ISO-BMFF file: no leading ftyp box")
    _, body, end = ftyp
    brands = [data[i : i + 4] for i in range(body, end - 3, 4) if i != body + 4]  # not minor
    top = _first(data, root, b"meta", b"moov")
    ipco = _descend(data, top.get(b"meta"), b"iprp", b"ipco")
    spatial = [_ispe(data, box) for box in _all(data, ipco, b"ispe")]
    moov = top.get(b"moov")
    if moov is not None and b"avis" in brands:
        frames = 0
        track_sizes: list[tuple[int, int]] = []
        for track in _all(data, moov, b"trak"):
            parts = _first(data, track, b"tkhd", b"mdia")
            if b"tkhd" in parts:
                track_sizes.append(_tkhd_size(data, parts[b"tkhd"]))
            table = _descend(data, parts.get(b"mdia"), b"minf", b"stbl")
            if table is not None:
                frames = max(frames, _sample_count(data, table, max_frames))
        sizes = [size for size in track_sizes if size[0] and size[1]] or spatial
        if frames == 0 or not sizes:
            return None
        return (frames, *_largest(sizes))
    if not spatial:
        return None
    return (1, *_largest(spatial))


def _largest(sizes: list[tuple[int, int]]) -> tuple[int, int]:
    return max(sizes, key=lambda size: size[0] * size[1])


def _ispe(data: bytes, box: _Box) -> tuple[int, int]:
    _, body, end = box
    if body + _FULL_BOX + _U32_PAIR.size > end:
        raise ContainerError("ispe box truncated")
    width, height = _U32_PAIR.unpack_from(data, body + _FULL_BOX)
    return width, height


def _tkhd_size(data: bytes, box: _Box) -> tuple[int, int]:
    """The track's presentation size, 16.16 fixed point; (0, 0) for an unknown version."""
    _, body, end = box
    if body >= end:
        raise ContainerError("tkhd box is empty")
    offset = _TKHD_SIZE_OFFSET.get(data[body])
    if offset is None:
        return 0, 0
    if body + offset + _U32_PAIR.size > end:
        raise ContainerError("tkhd box truncated")
    width, height = _U32_PAIR.unpack_from(data, body + offset)
    return width >> 16, height >> 16


def _sample_count(data: bytes, table: _Box, max_frames: int) -> int:
    """stsz's (or stz2's) sample_count, else the sum of stts's run lengths, summed only until
    it passes `max_frames`."""
    parts = _first(data, table, b"stsz", b"stz2", b"stts")
    sizes = parts.get(b"stsz") or parts.get(b"stz2")
    if sizes is not None:
        _, body, end = sizes
        if body + _FULL_BOX + 8 > end:
            raise ContainerError("stsz box truncated")
        return int.from_bytes(data[body + 8 : body + 12], "big")
    if b"stts" not in parts:
        return 0
    _, body, end = parts[b"stts"]
    if body + _FULL_BOX + 4 > end:
        raise ContainerError("stts box truncated")
    entries = int.from_bytes(data[body + 4 : body + 8], "big")
    first = body + 8
    total = 0
    for entry in range(first, min(first + 8 * entries, end - 7), 8):
        total += int.from_bytes(data[entry : entry + 4], "big")
        if total > max_frames:
            break
    return total


# HEIC/HEIF ----------------------------------------------------------------------------------

# Item types that are images (coded, derived or masks); Exif, XMP (mime) and the like are not.
_IMAGE_ITEMS = frozenset(
    {b"hvc1", b"av01", b"jpeg", b"j2k1", b"unci", b"vvc1", b"avc1", b"grid", b"iden", b"iovl"}
    | {b"tili", b"mski"}
)
_NOT_TOP_LEVEL_FROM = (b"thmb", b"auxl")  # the referring item is a thumbnail / auxiliary image
_HIDDEN_ITEM = 0x1


def heif_budget(data: bytes, max_frames: int) -> Budget | None:
    """The top-level images libheif shows (and Pillow counts as frames): image items
    (meta/iinf) neither hidden, nor a thumbnail or auxiliary image (iref thmb, auxl), nor an
    input of a derived image (iref dimg: a grid's tiles); each counted at the largest `ispe`.
    Every item's data must lie within the bytes (`_heif_check_extents`)."""
    root: _Box = (b"", 0, len(data))
    ftyp = next(_boxes(data, 0, len(data)), None)
    if ftyp is None or ftyp[0] != b"ftyp":
        raise ContainerError("not an ISO-BMFF file: no leading ftyp box")
    meta = _first(data, root, b"meta").get(b"meta")
    parts = _first(data, meta, b"iinf", b"iref", b"iprp", b"iloc")
    if b"iloc" in parts:
        _heif_check_extents(data, parts[b"iloc"])
    items = _heif_image_items(data, parts.get(b"iinf"))
    for kind, source, targets in _heif_references(data, parts.get(b"iref")):
        if kind in _NOT_TOP_LEVEL_FROM:
            items.discard(source)
        elif kind == b"dimg":
            items.difference_update(targets)
    ipco = _descend(data, parts.get(b"iprp"), b"ipco")
    spatial = [_ispe(data, box) for box in _all(data, ipco, b"ispe")]
    if not items or not spatial:
        return None
    return (min(len(items), max_frames + 1), *_largest(spatial))


def _heif_check_extents(data: bytes, iloc: _Box) -> None:
    """Every item's data in the file (construction method 0) lies within the bytes: libheif
    decodes a grid whose tiles are cut off as a picture with holes, so a truncated file is
    caught here."""
    _, body, end = iloc
    reader = _Reader(data, body, end, "iloc")
    version = reader.read(1)
    reader.read(3)  # flags
    sizes = reader.read(1)
    offset_size, length_size = sizes >> 4, sizes & 0x0F
    sizes = reader.read(1)
    base_size, index_size = sizes >> 4, (sizes & 0x0F) if version in (1, 2) else 0
    for _ in range(reader.read(2 if version < 2 else 4)):
        reader.read(2 if version < 2 else 4)  # item_ID
        method = reader.read(2) & 0x0F if version in (1, 2) else 0
        reader.read(2)  # data_reference_index
        base = reader.read(base_size)
        extents = reader.read(2)
        if not index_size + offset_size + length_size:
            continue  # extents of no bytes: nothing to check, and counting them costs CPU
        for _ in range(extents):
            reader.read(index_size)
            offset, length = reader.read(offset_size), reader.read(length_size)
            if method == 0 and base + offset + length > len(data):
                raise ContainerError("an item's data lies past the end of the file (truncated)")


class _Reader:
    """Big-endian integers read in turn from a box, each checked against its end."""

    def __init__(self, data: bytes, pos: int, end: int, box: str) -> None:
        self._data, self._pos, self._end, self._box = data, pos, end, box

    def read(self, size: int) -> int:
        if size not in (0, 1, 2, 3, 4, 8):
            raise ContainerError(f"{self._box} box has a {size}-byte field")
        if self._pos + size > self._end:
            raise ContainerError(f"{self._box} box truncated")
        value = int.from_bytes(self._data[self._pos : self._pos + size], "big")
        self._pos += size
        return value


def _heif_image_items(data: bytes, iinf: _Box | None) -> set[int]:
    """The ids of the image items (infe version 2 or 3) that are not hidden."""
    if iinf is None:
        return set()
    _, body, end = iinf
    if body + _FULL_BOX > end:
        raise ContainerError("iinf box truncated")
    first = body + _FULL_BOX + (2 if data[body] == 0 else 4)  # then entry_count
    found: set[int] = set()
    for kind, start, stop in _boxes(data, first, end):
        if kind != b"infe" or start + _FULL_BOX > stop:
            continue
        version, flags = data[start], int.from_bytes(data[start + 1 : start + 4], "big")
        if version not in (2, 3):
            continue  # versions 0 and 1 name no item type
        width = 2 if version == 2 else 4
        pos = start + _FULL_BOX
        if pos + width + 2 + 4 > stop:
            raise ContainerError("infe box truncated")
        item = int.from_bytes(data[pos : pos + width], "big")
        item_type = data[pos + width + 2 : pos + width + 6]  # after item_protection_index
        if item_type in _IMAGE_ITEMS and not flags & _HIDDEN_ITEM:
            found.add(item)
    return found


def _heif_references(data: bytes, iref: _Box | None) -> Iterator[tuple[bytes, int, list[int]]]:
    """(reference type, from item, to items) of each reference in `iref`."""
    if iref is None:
        return
    _, body, end = iref
    if body + _FULL_BOX > end:
        raise ContainerError("iref box truncated")
    width = 2 if data[body] == 0 else 4
    for kind, start, stop in _boxes(data, body + _FULL_BOX, end):
        if start + width + 2 > stop:
            raise ContainerError(f"iref {kind!r} reference truncated")
        source = int.from_bytes(data[start : start + width], "big")
        count = int.from_bytes(data[start + width : start + width + 2], "big")
        first = start + width + 2
        last = min(first + count * width, stop - width + 1)
        yield (
            kind,
            source,
            [int.from_bytes(data[i : i + width], "big") for i in range(first, last, width)],
        )
