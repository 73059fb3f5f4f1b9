"""Seeded malformed image files, for fuzzing the processor's job (`verify_and_render`).

`cases(seed, count)` yields `(name, bytes, declared content type)`. Each case starts from a small
real image of an accepted type made here with Pillow (JPEG with EXIF+ICC+XMP, progressive JPEG,
CMYK JPEG, PNG with alpha and text chunks, palette PNG, APNG, animated GIF, WebP lossy, lossless
and animated, AVIF still and animated, HEIC still with metadata, tiled and with two images,
and a HEIF without HEVC brands) and applies 1-3 mutations: byte-level ones (bit flips,
overwrites, truncation, insertion, deletion, duplication, splices from another format), chunk
and segment surgery that understands the container (PNG chunks, JPEG markers, RIFF chunks,
ISO-BMFF boxes, GIF blocks), header fields at extremes (width/height 0, 1, 65535, 2^31-1 as far
as the field holds them) and EXIF / ICC / XMP blocks with wrong types, counts and offsets.

Everything comes from `random.Random`, seeded per case from (seed, index): a case is the same
on every run and can be made alone. The name carries both, so a failure reproduces with

    .venv/bin/python -m tests.fuzz SEED INDEX

which prints the case and what the job made of it (or the traceback that escaped).
"""

from __future__ import annotations

import functools
import io
import random
import struct
import sys
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from PIL import Image, ImageCms, ImageDraw, PngImagePlugin, TiffImagePlugin

from imagery.common import errors
from imagery.processor.adapters.render import verify_and_render
from imagery.processor.imaging import Limits, Rejected, RenderSpec

# Small enough that a header claiming a pixel flood is refused before any decoding, large
# enough that every base image (<= 64 px a side) and most mutations of it pass the checks.
LIMITS = Limits(max_side=1024, max_pixels=256 * 256, max_frames=16, max_total_pixels=1 << 20)
SPEC = RenderSpec()
AVIF_SPEC = RenderSpec(avif=True)

CONTENT_TYPES = {
    "jpeg": "image/jpeg",
    "png": "image/png",
    "gif": "image/gif",
    "webp": "image/webp",
    "avif": "image/avif",
    "heic": "image/heic",
    "heif": "image/heif",
}
# width / height at extremes; a field narrower than 32 bits gets the largest value it holds
EXTREMES = (0, 1, 65535, 65536, (1 << 24) - 1, (1 << 31) - 1, (1 << 32) - 1)

Mutated = tuple[str, bytes]
Rng = random.Random


def listed_reasons() -> frozenset[str]:
    """The reasons a failed upload may record: `errors.FAILURE_REASONS`, or the values of
    `errors.FailureReason` where the catalog is an enum."""
    catalog = vars(errors)
    listed = catalog.get("FAILURE_REASONS") or catalog["FailureReason"]
    return frozenset(str(reason) for reason in listed)


def spec_for(index: int) -> RenderSpec:
    """The render spec of case `index`: AVIF variants for one case in eight (AVIF encoding
    is the slow one), the default outputs otherwise."""
    return AVIF_SPEC if index % 8 == 0 else SPEC


def repro(seed: int, index: int) -> str:
    return f".venv/bin/python -m tests.fuzz {seed} {index}"


# --- the real images every case starts from ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Base:
    name: str
    kind: str  # jpeg | png | gif | webp | avif | heic | heif
    data: bytes


def _picture(width: int, height: int, shade: int = 0, mode: str = "RGB") -> Image.Image:
    size = (width, height)
    red = Image.linear_gradient("L").resize(size)
    green = Image.linear_gradient("L").transpose(Image.Transpose.ROTATE_90).resize(size)
    blue = Image.radial_gradient("L").resize(size)
    picture = Image.merge("RGB", (red, green, blue))
    ImageDraw.Draw(picture).rectangle(
        (width // 4, height // 4, width // 2 + shade % 8, height // 2),
        fill=((shade * 80) % 256, 255 - (shade * 50) % 256, 40),
    )
    if mode == "RGBA":
        alpha = Image.linear_gradient("L").transpose(Image.Transpose.ROTATE_180).resize(size)
        picture.putalpha(alpha)
    return picture.convert(mode) if mode not in ("RGB", "RGBA") else picture


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "imagery-fuzz"
    exif[0x0131] = "tests/fuzz.py"
    exif[0x011A] = TiffImagePlugin.IFDRational(72, 1)
    exif[0x011B] = TiffImagePlugin.IFDRational(72, 1)
    exif[0x0128] = 2
    exif.get_ifd(0x8769)[0x9003] = "2024:01:01 00:00:00"
    exif.get_ifd(0x8825)[1] = "N"
    return exif.tobytes()


@functools.cache
def _icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


_XMP = (
    b'<?xpacket begin="\xef\xbb\xbf" id="W5M0MpCehiHzreSzNTczkc9d"?>'
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
    b'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6"/>'
    b'</rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
)


def _save(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


HEVC_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs")


def without_hevc_brands(data: bytes) -> bytes:
    """The same HEIF with only structure brands in its ftyp (major mif1, no heic): what a
    file declared as plain HEIF (image/heif) looks like."""
    size = int.from_bytes(data[:4], "big")
    brands = [data[i : i + 4] for i in range(16, size, 4)]
    plain = b"".join(b"miaf" if brand in HEVC_BRANDS else brand for brand in brands)
    return data[:8] + b"mif1" + data[12:16] + plain + data[size:]


@functools.cache
def bases() -> tuple[Base, ...]:
    icc = _icc()
    text = PngImagePlugin.PngInfo()
    text.add_text("Comment", "imagery fuzz base")
    text.add_text("Description", "compressed " * 20, zip=True)
    text.add_itxt("XML:com.adobe.xmp", _XMP.decode(), lang="en", tkey="xmp")
    frames = [_picture(32, 24, shade) for shade in range(3)]
    rgba_frames = [_picture(32, 24, shade, "RGBA") for shade in range(3)]
    gif_frames = [
        _picture(32, 32, shade).convert("P", palette=Image.Palette.ADAPTIVE) for shade in range(4)
    ]
    return (
        Base(
            "jpeg_exif_icc",
            "jpeg",
            _save(_picture(48, 32), "JPEG", quality=80, exif=_exif(6), icc_profile=icc, xmp=_XMP),
        ),
        Base(
            "jpeg_progressive",
            "jpeg",
            _save(
                _picture(40, 40, 1),
                "JPEG",
                progressive=True,
                optimize=True,
                subsampling=2,
                exif=_exif(3),
                comment=b"progressive",
            ),
        ),
        Base(
            "jpeg_cmyk", "jpeg", _save(_picture(24, 24, 2).convert("CMYK"), "JPEG", icc_profile=icc)
        ),
        Base(
            "png_alpha_text",
            "png",
            _save(_picture(40, 30, 0, "RGBA"), "PNG", pnginfo=text, exif=_exif(8), icc_profile=icc),
        ),
        Base(
            "png_palette_trns",
            "png",
            _save(
                _picture(32, 32, 3).convert("P", palette=Image.Palette.ADAPTIVE, colors=16),
                "PNG",
                transparency=0,
            ),
        ),
        Base(
            "apng",
            "png",
            _save(
                rgba_frames[0],
                "PNG",
                save_all=True,
                append_images=rgba_frames[1:],
                duration=[20, 30, 40],
                loop=0,
                disposal=[0, 1, 2],
                blend=[0, 1, 0],
            ),
        ),
        Base(
            "gif_animated",
            "gif",
            _save(
                gif_frames[0],
                "GIF",
                save_all=True,
                append_images=gif_frames[1:],
                duration=20,
                loop=0,
                transparency=0,
                disposal=2,
                comment=b"imagery fuzz",
                optimize=False,
            ),
        ),
        Base(
            "webp_lossy_meta",
            "webp",
            _save(
                _picture(48, 32, 4), "WEBP", quality=70, exif=_exif(6), icc_profile=icc, xmp=_XMP
            ),
        ),
        Base(
            "webp_lossless_alpha", "webp", _save(_picture(32, 32, 5, "RGBA"), "WEBP", lossless=True)
        ),
        Base(
            "webp_animated",
            "webp",
            _save(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=30, loop=0),
        ),
        Base(
            "avif_still",
            "avif",
            _save(
                _picture(32, 24, 6), "AVIF", quality=50, exif=_exif(6), icc_profile=icc, xmp=_XMP
            ),
        ),
        Base(
            "avif_animated",
            "avif",
            _save(
                _picture(16, 16, 0),
                "AVIF",
                save_all=True,
                append_images=[_picture(16, 16, 1)],
                duration=40,
                quality=50,
            ),
        ),
        Base(
            "heic_exif_icc",
            "heic",
            _save(
                _picture(48, 32, 7), "HEIF", quality=50, exif=_exif(6), icc_profile=icc, xmp=_XMP
            ),
        ),
        Base("heic_grid", "heic", _save(_picture(64, 48, 8), "HEIF", quality=50, tile_size=32)),
        Base(
            "heic_two_images",
            "heic",
            _save(
                _picture(32, 24, 1),
                "HEIF",
                save_all=True,
                append_images=[_picture(24, 32, 2)],
                quality=50,
            ),
        ),
        Base("heif_plain", "heif", without_hevc_brands(_save(_picture(32, 32, 9), "HEIF"))),
    )


# --- generic byte mutations -------------------------------------------------------------------


def _position(rng: Rng, size: int) -> int:
    """Anywhere, or (half the time) among the first 512 bytes, where the headers are."""
    if size <= 0:
        return 0
    return rng.randrange(min(size, 512) if rng.random() < 0.5 else size)


_INTERESTING = (
    b"\x00",
    b"\xff",
    b"\x7f",
    b"\x80",
    b"\x00\x00",
    b"\xff\xff",
    b"\x7f\xff",
    b"\x80\x00",
    b"\x00\x00\x00\x00",
    b"\xff\xff\xff\xff",
    b"\x7f\xff\xff\xff",
    b"\x80\x00\x00\x00",
    b"\x00\x00\x00\x01",
)


def bitflip(rng: Rng, data: bytes) -> Mutated:
    out = bytearray(data)
    flips = rng.choice((1, 1, 2, 3, 5, 8, 32))
    for _ in range(flips):
        if out:
            out[_position(rng, len(out))] ^= 1 << rng.randrange(8)
    return f"bitflip({flips})", bytes(out)


def overwrite(rng: Rng, data: bytes) -> Mutated:
    out = bytearray(data)
    at = _position(rng, len(out))
    style = rng.choice(("random", "zero", "ff", "interesting"))
    if style == "interesting":
        fill = rng.choice(_INTERESTING)
    else:
        span = rng.randint(1, 16)
        fill = {
            "random": rng.randbytes(span),
            "zero": b"\x00" * span,
            "ff": b"\xff" * span,
        }[style]
    out[at : at + len(fill)] = fill
    return f"overwrite({style}@{at})", bytes(out[: max(len(data), at + len(fill))])


def truncate(rng: Rng, data: bytes) -> Mutated:
    size = len(data)
    at = rng.choice(
        (
            rng.randrange(size + 1),
            rng.randrange(min(size, 64) + 1),
            max(0, size - rng.randint(1, 16)),
            size // 2,
            size - 1,
        )
    )
    return f"truncate({at}/{size})", data[:at]


def insert(rng: Rng, data: bytes) -> Mutated:
    at = _position(rng, len(data) + 1)
    extra = rng.choice((rng.randbytes(rng.randint(1, 64)), b"\x00" * rng.randint(1, 4096)))
    return f"insert({len(extra)}@{at})", data[:at] + extra + data[at:]


def delete(rng: Rng, data: bytes) -> Mutated:
    at = _position(rng, len(data))
    span = rng.choice((1, 2, 4, rng.randint(1, 256)))
    return f"delete({span}@{at})", data[:at] + data[at + span :]


def duplicate(rng: Rng, data: bytes) -> Mutated:
    at = _position(rng, len(data))
    span = rng.randint(1, 512)
    times = rng.choice((1, 2, 16))
    return f"duplicate({span}@{at}x{times})", data[: at + span] + data[
        at : at + span
    ] * times + data[at + span :]


def splice(rng: Rng, data: bytes) -> Mutated:
    """A run of bytes from another base image (often another format) spliced in."""
    donor = rng.choice(bases())
    start = rng.randrange(len(donor.data))
    piece = donor.data[start : start + rng.randint(8, 400)]
    at = _position(rng, len(data))
    return f"splice({donor.name}@{at})", data[:at] + piece + data[at + len(piece) :]


GENERIC: tuple[Callable[[Rng, bytes], Mutated], ...] = (
    bitflip,
    bitflip,
    overwrite,
    overwrite,
    truncate,
    insert,
    delete,
    duplicate,
    splice,
)


def _reorder(rng: Rng, units: list[bytes]) -> tuple[str, list[bytes]]:
    """Drop, duplicate, swap or move one unit (chunk, segment, block, box), or flood with copies."""
    units = list(units)
    op = rng.choice(("drop", "dup", "swap", "move", "flood"))
    i = rng.randrange(len(units))
    if op == "drop":
        del units[i]
    elif op == "dup":
        units.insert(i, units[i])
    elif op == "flood":
        copies = rng.choice((20, 120, 600))
        units[i:i] = [units[i]] * copies
        op = f"flood{copies}"
    else:
        j = rng.randrange(len(units))
        if op == "swap":
            units[i], units[j] = units[j], units[i]
        else:
            units.insert(j, units.pop(i))
        op = f"{op}>{j}"
    return f"{op}@{i}", units


def _clamp(value: int, bits: int) -> int:
    return min(value, (1 << bits) - 1)


def _dims(rng: Rng, width: int, height: int) -> tuple[int, int]:
    """A (width, height) with at least one side at an extreme."""
    while True:
        w = rng.choice((*EXTREMES, width))
        h = rng.choice((*EXTREMES, height))
        if (w, h) != (width, height):
            return w, h


# --- EXIF, ICC and XMP blocks gone wrong -------------------------------------------------------

_TIFF_TYPE_SIZES = {
    1: 1,
    2: 1,
    3: 2,
    4: 4,
    5: 8,
    6: 1,
    7: 1,
    8: 2,
    9: 4,
    10: 8,
    11: 4,
    12: 8,
    13: 4,
}
_SHORT, _LONG, _RATIONAL, _ASCII, _UNDEFINED = 3, 4, 5, 2, 7
_TIFF_MAX_ENTRIES = 16
_TIFF_DATA_START = 8 + 2 + 12 * _TIFF_MAX_ENTRIES + 4


class _Tiff:
    """A TIFF (EXIF) structure written entry by entry, with any field as wrong as asked."""

    def __init__(self, order: str) -> None:
        self.order = order  # "<" or ">"
        self.entries: list[tuple[int, int, int, bytes]] = []  # tag, type, count, value field
        self.extra: list[tuple[str, bytes]] = []  # (label, data) laid out after the IFD
        self.next_ifd = 0

    def pack(self, fmt: str, *values: int) -> bytes:
        return struct.pack(self.order + fmt, *values)

    def value(self, kind: int, number: int) -> bytes:
        """A value inline in the 4-byte field, as the type says (SHORT left-justified)."""
        if kind in (_SHORT, 8):
            return self.pack("HH", number & 0xFFFF, 0)
        if kind in (1, 6, 7, _ASCII):
            return bytes([number & 0xFF]) + b"\x00\x00\x00"
        return self.pack("I", number & 0xFFFFFFFF)

    def add(self, tag: int, kind: int, count: int, field: bytes) -> None:
        self.entries.append((tag, kind, count, field))

    def data_offset(self, label: str, data: bytes) -> int:
        """The offset `data` will have when laid out after the IFD (which has room for
        `_TIFF_MAX_ENTRIES`, so entries added later move nothing)."""
        offset = _TIFF_DATA_START + sum(len(d) for _, d in self.extra)
        self.extra.append((label, data))
        return offset

    def to_bytes(self, header: bytes | None = None, count: int | None = None) -> bytes:
        head = (
            header
            if header is not None
            else ((b"II" if self.order == "<" else b"MM") + self.pack("HI", 42, 8))
        )
        ifd = self.pack("H", len(self.entries) if count is None else count)
        for tag, kind, number, field in self.entries:
            ifd += self.pack("HHI", tag, kind & 0xFFFF, number & 0xFFFFFFFF) + field[:4].ljust(
                4, b"\0"
            )
        ifd += self.pack("I", self.next_ifd)
        return (head + ifd).ljust(_TIFF_DATA_START, b"\0") + b"".join(d for _, d in self.extra)


def bad_exif(rng: Rng) -> Mutated:
    """A TIFF/EXIF block (no "Exif\\0\\0" prefix) with 1-3 of: Orientation or ResolutionUnit
    of the wrong type or value, counts beyond the data, offsets outside the block, sub-IFD and
    next-IFD pointers that loop or leave, rationals over zero, a bogus header."""
    t = _Tiff(rng.choice("<>"))
    labels: list[str] = []
    header: bytes | None = None
    entry_count: int | None = None
    if rng.random() < 0.5:  # a well-formed rotation, so the transposing path runs as well
        t.add(0x0112, _SHORT, 1, t.value(_SHORT, rng.choice((5, 6, 7, 8))))
    for _ in range(rng.choice((1, 1, 2, 3))):
        kind = rng.choice(
            (
                "orientation_long", "orientation_short", "orientation_type", "orientation_count",
                "resolution_unit_long", "rational_zero", "count_beyond_data", "offset_outside",
                "exif_ifd", "gps_ifd_loop", "next_ifd", "thumbnail_outside", "entry_count",
                "header", "duplicate_orientation", "makernote_huge", "unknown_type",
            )
        )  # fmt: skip
        if kind == "orientation_long":
            value = rng.choice((6, 8, 70000, (1 << 32) - 1))
            t.add(0x0112, _LONG, 1, t.value(_LONG, value))
            labels.append(f"orientation_long={value}")
        elif kind == "orientation_short":
            value = rng.choice((0, 9, 255, 65535))
            t.add(0x0112, _SHORT, 1, t.value(_SHORT, value))
            labels.append(f"orientation_short={value}")
        elif kind == "orientation_type":
            type_ = rng.choice((_ASCII, _RATIONAL, 10, _UNDEFINED, 11, 12, 1, 0, 13, 255))
            count = rng.choice((1, 2))
            size = _TIFF_TYPE_SIZES.get(type_, 1) * count
            field = (
                t.pack("I", t.data_offset("orientation", rng.randbytes(size)))
                if size > 4
                else t.value(type_, 6)
            )
            t.add(0x0112, type_, count, field)
            labels.append(f"orientation_type={type_}x{count}")
        elif kind == "orientation_count":
            count = rng.choice((0, 2, 3, 65535, (1 << 31) - 1))
            field = (
                t.pack("I", t.data_offset("orientations", t.pack("HHH", 6, 6, 6)))
                if count > 2
                else t.pack("HH", 6, 6)
            )
            t.add(0x0112, _SHORT, count, field)
            labels.append(f"orientation_count={count}")
        elif kind == "resolution_unit_long":
            value = rng.choice((70000, 3, (1 << 31) - 1))
            t.add(0x0128, _LONG, 1, t.value(_LONG, value))
            labels.append(f"resolution_unit_long={value}")
        elif kind == "rational_zero":
            numerator, denominator = rng.choice(((72, 0), (0, 0), ((1 << 32) - 1, 1)))
            offset = t.data_offset("rational", t.pack("II", numerator, denominator))
            t.add(rng.choice((0x011A, 0x011B)), rng.choice((_RATIONAL, 10)), 1, t.pack("I", offset))
            labels.append(f"rational={numerator}/{denominator}")
        elif kind == "count_beyond_data":
            count = rng.choice((64, 0xFFFF, (1 << 31) - 1, (1 << 32) - 1))
            offset = t.data_offset("ascii", b"fuzz")
            t.add(
                rng.choice((0x010F, 0x0110, 0x0131, 0x9286)),
                rng.choice((_ASCII, _UNDEFINED, _LONG)),
                count,
                t.pack("I", offset),
            )
            labels.append(f"count_beyond_data={count}")
        elif kind == "offset_outside":
            offset = rng.choice((0xFFFFFFF0, 0x7FFFFFFF, 4096, 1))
            t.add(
                rng.choice((0x010F, 0x011A, 0x0131)),
                rng.choice((_ASCII, _RATIONAL)),
                20,
                t.pack("I", offset),
            )
            labels.append(f"offset_outside={offset:#x}")
        elif kind == "exif_ifd":
            target = rng.choice(("outside", "self", "zero", "ascii", "into_header"))
            offset = {"outside": 0xFFFFFF00, "self": 8, "zero": 0, "ascii": 8, "into_header": 2}[
                target
            ]
            t.add(
                0x8769,
                _ASCII if target == "ascii" else _LONG,
                4 if target == "ascii" else 1,
                t.pack("I", offset),
            )
            labels.append(f"exif_ifd={target}")
        elif kind == "gps_ifd_loop":
            t.add(0x8825, _LONG, 1, t.pack("I", 8))
            labels.append("gps_ifd_loop")
        elif kind == "next_ifd":
            t.next_ifd = rng.choice((8, 0xFFFFFFF0, 3))
            labels.append(f"next_ifd={t.next_ifd:#x}")
        elif kind == "thumbnail_outside":
            ifd1 = t.pack("H", 2)
            ifd1 += t.pack("HHII", 0x0201, _LONG, 1, rng.choice((0xFFFFFF00, 16)))
            ifd1 += t.pack("HHII", 0x0202, _LONG, 1, rng.choice((0xFFFFFFFF, 1 << 30)))
            ifd1 += t.pack("I", 0)
            t.next_ifd = t.data_offset("ifd1", ifd1)
            labels.append("thumbnail_outside")
        elif kind == "entry_count":
            entry_count = rng.choice((0, 0xFFFF, 0x1000))
            labels.append(f"entry_count={entry_count}")
        elif kind == "header":
            header = rng.choice(
                (
                    b"MI\x00*\x00\x00\x00\x08",
                    b"II+\x00\x08\x00\x00\x00",
                    b"MM\x00*\xff\xff\xff\xff",
                    b"MM\x00*\x00\x00\x00\x00",
                    b"II*\x00\x02\x00\x00\x00",
                    b"MM\x00*\x00\x00\x00\x08"[: rng.randint(0, 7)],
                )
            )
            labels.append(f"header={header[:8].hex()}")
        elif kind == "duplicate_orientation":
            t.add(0x0112, _SHORT, 1, t.value(_SHORT, 6))
            t.add(0x0112, _SHORT, 1, t.value(_SHORT, 3))
            labels.append("duplicate_orientation")
        elif kind == "makernote_huge":
            t.add(0x927C, _UNDEFINED, rng.choice((1 << 30, 5000)), t.pack("I", 8))
            labels.append("makernote_huge")
        else:
            type_ = rng.choice((0, 14, 255, 0xFFFF))
            t.add(rng.choice((0x0112, 0x0128, 0x010F)), type_, 1, t.pack("I", 6))
            labels.append(f"unknown_type={type_}")
    if rng.random() < 0.5:
        t.entries.sort(key=lambda entry: entry[0])
    return "+".join(labels), t.to_bytes(header, entry_count)


@functools.cache
def _lab_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()


def bad_icc(rng: Rng) -> Mutated:
    """An ICC profile gone wrong: garbage, truncated, lying size / tag count / tag offsets,
    a wrong colour space, broken curves, or a valid profile for the wrong colour model."""
    real = bytearray(_icc())
    tags = int.from_bytes(real[128:132], "big")
    kind = rng.choice(
        (
            "random", "size_field", "tag_count", "tag_outside", "truncated", "signature",
            "colour_space", "lab_profile", "bitflips", "version", "curve_count",
        )
    )  # fmt: skip
    if kind == "random":
        size = rng.choice((0, 1, 4, 127, 128, 131, 600))
        return f"icc_random({size})", rng.randbytes(size)
    if kind == "size_field":
        value = rng.choice((0, 127, len(real) // 2, len(real) * 4, 0xFFFFFFFF))
        real[0:4] = value.to_bytes(4, "big")
        return f"icc_size={value}", bytes(real)
    if kind == "tag_count":
        value = rng.choice((0, 0x10000, 0x7FFFFFFF, 0xFFFFFFFF))
        real[128:132] = value.to_bytes(4, "big")
        return f"icc_tag_count={value}", bytes(real)
    if kind == "tag_outside":
        entry = 132 + 12 * rng.randrange(max(1, tags))
        field = rng.choice((4, 8))  # offset or size
        value = rng.choice((0xFFFFFF00, 0xFFFFFFFF, len(real), 0))
        real[entry + field : entry + field + 4] = value.to_bytes(4, "big")
        return f"icc_tag_{'offset' if field == 4 else 'size'}={value:#x}", bytes(real)
    if kind == "truncated":
        size = rng.choice((64, 128, 132, 200, len(real) - 1))
        return f"icc_truncated({size})", bytes(real[:size])
    if kind == "signature":
        real[36:40] = rng.choice((b"xxxx", b"\0\0\0\0", b"ACSP"))
        return "icc_signature", bytes(real)
    if kind == "colour_space":
        space = rng.choice((b"CMYK", b"GRAY", b"Lab ", b"\0\0\0\0", b"FCLR"))
        real[16:20] = space
        return f"icc_colour_space={space!r}", bytes(real)
    if kind == "lab_profile":
        return "icc_lab_profile", _lab_icc()
    if kind == "bitflips":
        flips = rng.choice((1, 4, 16))
        for _ in range(flips):
            real[rng.randrange(128, len(real))] ^= 1 << rng.randrange(8)
        return f"icc_bitflips({flips})", bytes(real)
    if kind == "version":
        real[8] = rng.choice((0, 0x10, 0xFF))
        return f"icc_version={real[8]}", bytes(real)
    at = real.find(b"curv")
    if at < 0:
        return "icc_random(128)", rng.randbytes(128)
    value = rng.choice((0xFFFFFFFF, 0x7FFFFFFF, 0x10000))
    real[at + 8 : at + 12] = value.to_bytes(4, "big")
    return f"icc_curve_count={value:#x}", bytes(real)


def bad_xmp(rng: Rng) -> Mutated:
    kind = rng.choice(
        ("unclosed", "entities", "orientation", "deep", "binary", "huge", "element", "empty")
    )
    if kind == "unclosed":
        return "xmp_unclosed", _XMP[: rng.randint(10, len(_XMP) - 10)]
    if kind == "entities":
        lol = b'<!DOCTYPE x [<!ENTITY a "aaaaaaaaaa">' + b"".join(
            b'<!ENTITY %c "%s">' % (98 + i, (b"&%c;" % (97 + i)) * 10) for i in range(8)
        )
        return "xmp_entities", lol + b"]><x:xmpmeta xmlns:x='adobe:ns:meta/'>&i;</x:xmpmeta>"
    if kind == "orientation":
        value = rng.choice((b"9", b"", b"-1", b"65536", b"6\x00", b"6" * 100))
        return f"xmp_orientation={value[:8]!r}", _XMP.replace(
            b'Orientation="6"', b'Orientation="' + value + b'"'
        )
    if kind == "deep":
        depth = rng.choice((1000, 20000))
        return (
            f"xmp_deep({depth})",
            b"<x:xmpmeta>" + b"<a>" * depth + b"</a>" * depth + b"</x:xmpmeta>",
        )
    if kind == "binary":
        return "xmp_binary", b"<x:xmpmeta>" + rng.randbytes(200) + b"</x:xmpmeta>"
    if kind == "huge":
        return "xmp_huge", _XMP.replace(b"/>", b' tiff:Make="' + b"A" * 60000 + b'"/>')
    if kind == "element":
        return "xmp_element", _XMP.replace(
            b' tiff:Orientation="6"/>',
            b"><tiff:Orientation>8</tiff:Orientation><tiff:Orientation>3</tiff:Orientation></rdf:Description>",
        )
    return "xmp_empty", b""


def _inplace(rng: Rng, data: bytes, marker: bytes, block: bytes, label: str) -> Mutated | None:
    """`block` written over the bytes where `marker` shows an existing block starts, as far
    as the file goes (or past it): for containers whose offsets would go stale if the block
    changed length (AVIF items)."""
    start = data.find(marker)
    if start < 0:
        return None
    body = block[: len(data) - start] if rng.random() < 0.5 else block
    return f"{label}(inplace)", data[:start] + body + data[start + len(body) :]


# --- PNG ----------------------------------------------------------------------------------------

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_parse(data: bytes) -> list[tuple[bytes, bytes]] | None:
    if not data.startswith(_PNG_SIGNATURE):
        return None
    chunks, pos = [], 8
    while pos + 12 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        if pos + 12 + length > len(data):
            break
        chunks.append((data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return chunks or None


def _png_chunk(kind: bytes, payload: bytes, crc_ok: bool = True) -> bytes:
    crc = zlib.crc32(kind + payload) ^ (0 if crc_ok else 1)
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def _png(chunks: list[tuple[bytes, bytes]]) -> bytes:
    return _PNG_SIGNATURE + b"".join(_png_chunk(kind, payload) for kind, payload in chunks)


def _png_put(
    chunks: list[tuple[bytes, bytes]], kind: bytes, payload: bytes, replace: bytes | None = None
) -> list[tuple[bytes, bytes]]:
    """Replace the first chunk of type `replace` (default `kind`), or insert before IDAT."""
    chunks = list(chunks)
    target = replace or kind
    for i, (existing, _) in enumerate(chunks):
        if existing == target:
            chunks[i] = (kind, payload)
            return chunks
    at = next((i for i, (k, _) in enumerate(chunks) if k in (b"IDAT", b"acTL")), len(chunks))
    chunks.insert(at, (kind, payload))
    return chunks


@functools.cache
def _zeros_compressed(size: int) -> bytes:
    compressor = zlib.compressobj(9)
    block = b"\x00" * (1 << 20)
    out = b"".join(
        compressor.compress(block[: min(len(block), size - done)])
        for done in range(0, size, len(block))
    )
    return out + compressor.flush()


def _png_mutate(rng: Rng, data: bytes) -> Mutated | None:
    chunks = _png_parse(data)
    if chunks is None:
        return None
    kinds = [kind for kind, _ in chunks]
    op = rng.choice(
        (
            "reorder", "reorder", "ihdr_dims", "ihdr_dims", "ihdr_field", "crc", "length",
            "actl", "fctl", "split_idat", "idat", "exif", "exif", "raw_exif", "iccp", "iccp",
            "text", "xmp", "plte", "unknown", "iend",
        )
    )  # fmt: skip
    if op == "reorder":
        label, units = _reorder(rng, [_png_chunk(k, p) for k, p in chunks])
        i = int(label.rsplit("@", 1)[1])
        return f"png.{label}({kinds[i].decode('latin-1')})", _PNG_SIGNATURE + b"".join(units)
    if op in ("ihdr_dims", "ihdr_field"):
        at = kinds.index(b"IHDR") if b"IHDR" in kinds else None
        if at is None or len(chunks[at][1]) < 13:
            return None
        header = bytearray(chunks[at][1])
        if op == "ihdr_dims":
            width, height = struct.unpack(">II", header[:8])
            w, h = _dims(rng, width, height)
            header[:8] = struct.pack(">II", _clamp(w, 32), _clamp(h, 32))
            label = f"png.ihdr_dims({w}x{h})"
        else:
            field = rng.randrange(8, 13)
            value = rng.choice(
                {
                    8: (0, 1, 2, 3, 16, 255),
                    9: (1, 5, 7, 255),
                    10: (1, 255),
                    11: (1, 255),
                    12: (1, 2, 255),
                }[field]
            )
            header[field] = value
            label = f"png.ihdr_field({field}={value})"
        chunks[at] = (b"IHDR", bytes(header))
        crc_ok = rng.random() < 0.9
        return label + ("" if crc_ok else "+bad_crc"), _PNG_SIGNATURE + b"".join(
            _png_chunk(k, p, crc_ok or k != b"IHDR") for k, p in chunks
        )
    if op == "crc":
        i = rng.randrange(len(chunks))
        return f"png.bad_crc({kinds[i].decode('latin-1')})", _PNG_SIGNATURE + b"".join(
            _png_chunk(k, p, j != i) for j, (k, p) in enumerate(chunks)
        )
    if op == "length":
        i = rng.randrange(len(chunks))
        offset = 8 + sum(12 + len(p) for _, p in chunks[:i])
        value = rng.choice((0, 1, len(chunks[i][1]) + 1, 0x7FFFFFFF, 0xFFFFFFFF))
        out = bytearray(_png(chunks))
        out[offset : offset + 4] = value.to_bytes(4, "big")
        return f"png.length({kinds[i].decode('latin-1')}={value:#x})", bytes(out)
    if op == "actl":
        frames = rng.choice((0, 1, 2, 1000, 0x7FFFFFFF, 0xFFFFFFFF))
        plays = rng.choice((0, 0xFFFFFFFF))
        return f"png.actl(frames={frames},plays={plays})", _png(
            _png_put(chunks, b"acTL", struct.pack(">II", frames, plays))
        )
    if op == "fctl":
        positions = [i for i, k in enumerate(kinds) if k == b"fcTL"]
        if not positions:
            return None
        i = rng.choice(positions)
        payload = bytearray(chunks[i][1].ljust(26, b"\0"))
        name = rng.choice(("seq", "width", "height", "x", "y", "delay_den", "dispose", "blend"))
        where = {"seq": 0, "width": 4, "height": 8, "x": 12, "y": 16}
        if name in where:
            value = rng.choice(EXTREMES)
            payload[where[name] : where[name] + 4] = _clamp(value, 32).to_bytes(4, "big")
        elif name == "delay_den":
            value = 0
            payload[22:24] = b"\x00\x00"
        else:
            value = rng.choice((3, 5, 255))
            payload[24 if name == "dispose" else 25] = value
        chunks[i] = (b"fcTL", bytes(payload))
        return f"png.fctl({name}={value})", _png(chunks)
    if op == "split_idat":
        idat = b"".join(p for k, p in chunks if k == b"IDAT")
        if not idat:
            return None
        size = rng.choice((1, 3, 17))
        pieces = [(b"IDAT", idat[i : i + size]) for i in range(0, len(idat), size)]
        at = kinds.index(b"IDAT")
        rest = [(k, p) for k, p in chunks[at:] if k != b"IDAT"]
        return f"png.split_idat({size})", _png(chunks[:at] + pieces + rest)
    if op == "idat":
        positions = [i for i, k in enumerate(kinds) if k in (b"IDAT", b"fdAT")]
        if not positions:
            return None
        i = rng.choice(positions)
        prefix = chunks[i][1][:4] if kinds[i] == b"fdAT" else b""
        style = rng.choice(("random_zlib", "random", "zero_flood", "bad_filters"))
        if style == "random_zlib":
            body = zlib.compress(rng.randbytes(rng.randint(1, 20000)))
        elif style == "random":
            body = rng.randbytes(rng.randint(1, 200))
        elif style == "zero_flood":
            body = _zeros_compressed(8 << 20)
        else:
            body = zlib.compress(bytes([rng.choice((5, 9, 255))]) * 20000)
        chunks[i] = (kinds[i], prefix + body)
        return f"png.idat({style})", _png(chunks)
    if op == "exif":
        label, block = bad_exif(rng)
        if rng.random() < 0.3:
            block = b"Exif\x00\x00" + block
        return f"png.exif({label})", _png(_png_put(chunks, b"eXIf", block))
    if op == "raw_exif":
        label, block = bad_exif(rng)
        hexed = block.hex() if rng.random() < 0.8 else "zz" + block.hex()
        text = f"\nexif\n{len(block) * rng.choice((1, 2, 1000)):8}\n{hexed}\n".encode()
        return f"png.raw_profile_exif({label})", _png(
            _png_put(chunks, b"tEXt", b"Raw profile type exif\x00" + text, replace=b"eXIf")
        )
    if op == "iccp":
        label, profile = bad_icc(rng)
        method = rng.choice((0, 0, 0, 1, 255))
        body = zlib.compress(profile) if rng.random() < 0.8 else profile
        if rng.random() < 0.1:
            body, label = _zeros_compressed(4 << 20), "icc_zlib_bomb"
        return f"png.iccp({label},method={method})", _png(
            _png_put(chunks, b"iCCP", b"fuzz\x00" + bytes([method]) + body)
        )
    if op == "text":
        style = rng.choice(("ztxt_bomb", "no_nul", "itxt_bad_zlib", "many", "latin1"))
        if style == "ztxt_bomb":
            extra = [(b"zTXt", b"Comment\x00\x00" + _zeros_compressed(2 << 20))]
        elif style == "no_nul":
            extra = [(b"tEXt", rng.randbytes(100))]
        elif style == "itxt_bad_zlib":
            extra = [(b"iTXt", b"Comment\x00\x01\x00en\x00c\x00" + rng.randbytes(50))]
        elif style == "many":
            extra = [(b"zTXt", b"k%d\x00\x00" % i + _zeros_compressed(1 << 20)) for i in range(70)]
        else:
            extra = [(b"tEXt", b"\xff\xfe\x00" + bytes(range(256)))]
        at = rng.randrange(1, len(chunks)) if len(chunks) > 1 else 0
        return f"png.text({style})", _png(chunks[:at] + extra + chunks[at:])
    if op == "xmp":
        label, xmp = bad_xmp(rng)
        itxt = b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + xmp
        return f"png.xmp({label})", _png(_png_put(chunks, b"iTXt", itxt))
    if op == "plte":
        style = rng.choice(("plte_empty", "plte_odd", "plte_huge", "trns_long", "trns_rgb"))
        chunk = {
            "plte_empty": (b"PLTE", b""),
            "plte_odd": (b"PLTE", b"\x01\x02\x03\x04"),
            "plte_huge": (b"PLTE", rng.randbytes(3 * 300)),
            "trns_long": (b"tRNS", b"\x00" * 300),
            "trns_rgb": (b"tRNS", b"\x00\x01"),
        }[style]
        return f"png.{style}", _png(_png_put(chunks, *chunk))
    if op == "unknown":
        kind = rng.choice((b"ZZZZ", b"abCD", b"zzZz", b"IDAT"[::-1]))
        at = rng.randrange(len(chunks) + 1)
        return f"png.unknown({kind.decode()})", _png(
            [*chunks[:at], (kind, rng.randbytes(16)), *chunks[at:]]
        )
    style = rng.choice(("missing", "early", "garbage_after"))
    if style == "missing":
        return "png.iend(missing)", _png([(k, p) for k, p in chunks if k != b"IEND"])
    if style == "early":
        return "png.iend(early)", _png([chunks[0], (b"IEND", b""), *chunks[1:]])
    return "png.iend(garbage_after)", _png(chunks) + rng.randbytes(rng.randint(1, 5000))


# --- JPEG ---------------------------------------------------------------------------------------


def _jpeg_parse(data: bytes) -> list[bytes] | None:
    """SOI, then each marker segment (an SOS with its entropy-coded data), then EOI and what
    follows it."""
    if not data.startswith(b"\xff\xd8"):
        return None
    segments, pos = [data[:2]], 2
    while pos + 1 < len(data):
        if data[pos] != 0xFF:
            segments.append(data[pos:])
            break
        marker = data[pos + 1]
        if marker == 0xD9:
            segments.append(data[pos:])
            break
        if 0xD0 <= marker <= 0xD7 or marker in (0x01, 0xFF):
            segments.append(data[pos : pos + 2])
            pos += 2
            continue
        end = pos + 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if end > len(data):
            segments.append(data[pos:])
            break
        if marker == 0xDA:
            scan = end
            while True:
                scan = data.find(b"\xff", scan)
                if scan < 0 or scan + 1 >= len(data):
                    end = len(data)
                    break
                following = data[scan + 1]
                if following == 0 or 0xD0 <= following <= 0xD7 or following == 0xFF:
                    scan += 1
                    continue
                end = scan
                break
        segments.append(data[pos:end])
        pos = end
    return segments if len(segments) > 2 else None


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", min(len(payload) + 2, 0xFFFF)) + payload


def _marker(segment: bytes) -> int:
    return segment[1] if len(segment) > 1 else 0


def _jpeg_put(
    segments: list[bytes], segment: bytes, is_target: Callable[[bytes], bool]
) -> list[bytes]:
    """Replace the first segment `is_target` accepts, or insert right after SOI/APP0."""
    segments = list(segments)
    for i, existing in enumerate(segments):
        if is_target(existing):
            segments[i] = segment
            return segments
    at = 2 if len(segments) > 1 and _marker(segments[1]) == 0xE0 else 1
    segments.insert(at, segment)
    return segments


def _is_exif(segment: bytes) -> bool:
    return _marker(segment) == 0xE1 and segment[4:10] == b"Exif\x00\x00"


def _is_xmp(segment: bytes) -> bool:
    return _marker(segment) == 0xE1 and segment[4:9] == b"http:"


def _is_icc(segment: bytes) -> bool:
    return _marker(segment) == 0xE2 and segment[4:16] == b"ICC_PROFILE\x00"


def _icc_segment(seq: int, count: int, body: bytes) -> bytes:
    return _segment(0xE2, b"ICC_PROFILE\x00" + bytes([seq & 0xFF, count & 0xFF]) + body)


def _mpf(rng: Rng) -> Mutated:
    """An MPF (multi-picture) APP2 whose index claims pictures that are not there."""
    order = rng.choice("<>")
    t = _Tiff(order)
    images = rng.choice((2, 3, 1000, (1 << 31) - 1))
    entries = b"".join(
        struct.pack(
            order + "IIIHH",
            0x20000,
            rng.choice((0xFFFFFF00, 1 << 30, 100)),
            rng.choice((0, 8, 0xFFFFFFF0)),
            0,
            0,
        )
        for _ in range(min(images, 3))
    )
    t.add(0xB000, _UNDEFINED, 4, b"0100")
    t.add(0xB001, _LONG, 1, t.pack("I", images))
    t.add(0xB002, _UNDEFINED, 16 * images, t.pack("I", t.data_offset("mpentries", entries)))
    return f"mpf(images={images})", b"MPF\x00" + t.to_bytes()


def _jpeg_mutate(rng: Rng, data: bytes) -> Mutated | None:
    segments = _jpeg_parse(data)
    if segments is None:
        return None
    markers = [_marker(s) for s in segments]
    sofs = [i for i, m in enumerate(markers) if m in (0xC0, 0xC1, 0xC2) and len(segments[i]) >= 10]
    op = rng.choice(
        (
            "reorder", "reorder", "sof_dims", "sof_dims", "sof_field", "length", "exif", "exif",
            "icc", "icc", "xmp", "mpf", "dqt", "dht", "dri", "sos", "scan_data", "scan_flood",
            "adobe", "comment", "jfif", "eoi",
        )
    )  # fmt: skip
    if op == "reorder":
        label, units = _reorder(rng, segments[1:])
        i = 1 + int(label.rsplit("@", 1)[1])
        return f"jpeg.{label}({markers[i]:02X})", segments[0] + b"".join(units)
    if op in ("sof_dims", "sof_field"):
        if not sofs:
            return None
        i = rng.choice(sofs)
        sof = bytearray(segments[i])
        if op == "sof_dims":
            height, width = struct.unpack(">HH", sof[5:9])
            w, h = _dims(rng, width, height)
            sof[5:9] = struct.pack(">HH", _clamp(h, 16), _clamp(w, 16))
            label = f"jpeg.sof_dims({w}x{h})"
        else:
            field = rng.choice(("precision", "components", "sampling", "quant_table"))
            if field == "precision":
                sof[4] = rng.choice((0, 12, 16, 255))
            elif field == "components":
                sof[9] = rng.choice((0, 2, 4, 255))
            elif field == "sampling" and len(sof) > 11:
                sof[11] = rng.choice((0x00, 0xFF, 0x44, 0x13, 0x41))
            elif len(sof) > 12:
                sof[12] = rng.choice((3, 4, 15, 255))
            label = f"jpeg.sof_{field}"
        segments[i] = bytes(sof)
        return label, b"".join(segments)
    if op == "length":
        candidates = [
            i for i, m in enumerate(markers) if i > 0 and len(segments[i]) >= 4 and m != 0xD9
        ]
        if not candidates:
            return None
        i = rng.choice(candidates)
        actual = int.from_bytes(segments[i][2:4], "big")
        value = rng.choice((0, 1, 2, 0xFFFF, actual + 1, max(0, actual - 1)))
        segments[i] = segments[i][:2] + value.to_bytes(2, "big") + segments[i][4:]
        return f"jpeg.length({markers[i]:02X}={value})", b"".join(segments)
    if op == "exif":
        label, block = bad_exif(rng)
        return f"jpeg.exif({label})", b"".join(
            _jpeg_put(segments, _segment(0xE1, b"Exif\x00\x00" + block), _is_exif)
        )
    if op == "icc":
        label, profile = bad_icc(rng)
        layout = rng.choice(
            ("one", "one", "seq_zero", "count_short", "duplicated", "split_missing")
        )
        icc_chunk = _icc_segment
        if layout == "one":
            new = [icc_chunk(1, 1, profile)]
        elif layout == "seq_zero":
            new = [icc_chunk(0, 0, profile)]
        elif layout == "count_short":
            new = [icc_chunk(1, 3, profile)]
        elif layout == "duplicated":
            new = [icc_chunk(1, 2, profile), icc_chunk(1, 2, profile)]
        else:
            half = len(profile) // 2
            new = [icc_chunk(1, 3, profile[:half]), icc_chunk(3, 3, profile[half:])]
        kept = [s for s in segments if not _is_icc(s)]
        at = 2 if _marker(kept[1]) == 0xE0 else 1
        return f"jpeg.icc({label},{layout})", b"".join(kept[:at] + new + kept[at:])
    if op == "xmp":
        label, xmp = bad_xmp(rng)
        payload = b"http://ns.adobe.com/xap/1.0/\x00" + xmp
        return f"jpeg.xmp({label})", b"".join(
            _jpeg_put(segments, _segment(0xE1, payload[:65533]), _is_xmp)
        )
    if op == "mpf":
        label, payload = _mpf(rng)
        return f"jpeg.{label}", b"".join(
            _jpeg_put(segments, _segment(0xE2, payload), lambda s: s[4:8] == b"MPF\x00")
        )
    if op in ("dqt", "dht"):
        marker = 0xDB if op == "dqt" else 0xC4
        positions = [i for i, m in enumerate(markers) if m == marker]
        if not positions:
            return None
        i = rng.choice(positions)
        seg = bytearray(segments[i])
        if len(seg) < 22:
            return None
        if op == "dqt":
            seg[4] = rng.choice((0x04, 0x0F, 0x10, 0x13, 0xFF))
            label = f"jpeg.dqt(table={seg[4]:#x})"
        else:
            counts = rng.choice((b"\xff" * 16, b"\x00" * 16, b"\x01" * 16))
            seg[5:21] = counts
            label = f"jpeg.dht(counts={counts[0]:#x})"
        segments[i] = bytes(seg)
        return label, b"".join(segments)
    if op == "dri":
        interval = rng.choice((0, 1, 3, 0xFFFF))
        at = markers.index(0xDA) if 0xDA in markers else len(segments)
        return f"jpeg.dri({interval})", b"".join(
            [*segments[:at], _segment(0xDD, struct.pack(">H", interval)), *segments[at:]]
        )
    if op in ("sos", "scan_data", "scan_flood"):
        scans = [i for i, m in enumerate(markers) if m == 0xDA]
        if not scans:
            return None
        i = rng.choice(scans)
        seg = bytearray(segments[i])
        header_end = 2 + int.from_bytes(seg[2:4], "big")
        if op == "sos":
            at = rng.randrange(4, min(header_end, len(seg)))
            seg[at] = rng.choice((0, 0x3F, 0x40, 0xFF, 0x11))
            label = f"jpeg.sos(byte{at}={seg[at]:#x})"
            segments[i] = bytes(seg)
        elif op == "scan_data":
            flips = rng.choice((1, 8, 64))
            for _ in range(flips):
                if len(seg) > header_end:
                    at = rng.randrange(header_end, len(seg))
                    if seg[at] != 0xFF:
                        seg[at] ^= 1 << rng.randrange(8)
                        if seg[at] == 0xFF:
                            seg[at] = 0xFE
            segments[i] = bytes(seg)
            label = f"jpeg.scan_data({flips})"
        else:
            copies = rng.choice((50, 500, 3000))
            progressive = [
                s for j, s in enumerate(segments) if j >= i and _marker(s) in (0xDA, 0xC4)
            ]
            segments[i:i] = progressive * (copies // max(1, len(progressive)))
            label = f"jpeg.scan_flood({copies})"
        return label, b"".join(segments)
    if op == "adobe":
        transform = rng.choice((0, 1, 2, 255))
        payload = b"Adobe" + struct.pack(">HHHB", 100, 0, 0, transform)
        return f"jpeg.adobe(transform={transform})", b"".join(
            _jpeg_put(segments, _segment(0xEE, payload), lambda s: _marker(s) == 0xEE)
        )
    if op == "comment":
        count = rng.choice((1, 100))
        comment = _segment(0xFE, rng.randbytes(rng.choice((0, 1, 60000))))
        return f"jpeg.comment(x{count})", b"".join([segments[0], comment * count, *segments[1:]])
    if op == "jfif":
        unit, density = rng.choice(((1, 0), (3, 1), (2, 0xFFFF), (0, 0)))
        payload = b"JFIF\x00\x01\x02" + struct.pack(">BHHBB", unit, density, density, 0, 0)
        return f"jpeg.jfif(units={unit},density={density})", b"".join(
            _jpeg_put(segments, _segment(0xE0, payload), lambda s: _marker(s) == 0xE0)
        )
    style = rng.choice(("missing", "second_soi", "garbage_after"))
    if style == "missing":
        return "jpeg.eoi(missing)", b"".join(s for s in segments if _marker(s) != 0xD9)
    if style == "second_soi":
        return "jpeg.eoi(second_soi)", b"".join(segments[:-1]) + b"\xff\xd8" + b"".join(segments)
    return "jpeg.eoi(garbage_after)", b"".join(segments) + rng.randbytes(rng.randint(1, 3000))


# --- WebP (RIFF) --------------------------------------------------------------------------------


def _riff_parse(data: bytes) -> list[tuple[bytes, bytes]] | None:
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    return _riff_chunks(data, 12)


def _riff_chunks(data: bytes, pos: int) -> list[tuple[bytes, bytes]] | None:
    chunks = []
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        if pos + 8 + size > len(data):
            break
        chunks.append((data[pos : pos + 4], data[pos + 8 : pos + 8 + size]))
        pos += 8 + size + (size & 1)
    return chunks or None


def _riff_chunk(fourcc: bytes, payload: bytes) -> bytes:
    return fourcc + struct.pack("<I", len(payload)) + payload + b"\x00" * (len(payload) & 1)


def _riff(chunks: list[tuple[bytes, bytes]]) -> bytes:
    body = b"WEBP" + b"".join(_riff_chunk(f, p) for f, p in chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _riff_put(
    chunks: list[tuple[bytes, bytes]], fourcc: bytes, payload: bytes, flag: int
) -> list[tuple[bytes, bytes]]:
    """Replace or add a metadata chunk, with its VP8X flag set (when there is a VP8X)."""
    chunks = list(chunks)
    for i, (existing, vp8x) in enumerate(chunks):
        if existing == b"VP8X" and vp8x:
            chunks[i] = (existing, bytes([vp8x[0] | flag]) + vp8x[1:])
    for i, (existing, _) in enumerate(chunks):
        if existing == fourcc:
            chunks[i] = (fourcc, payload)
            return chunks
    if fourcc == b"ICCP":
        chunks.insert(1 if chunks and chunks[0][0] == b"VP8X" else 0, (fourcc, payload))
    else:
        chunks.append((fourcc, payload))
    return chunks


def _u24(value: int) -> bytes:
    return _clamp(value, 24).to_bytes(3, "little")


def _vp8_dims(payload: bytes, rng: Rng) -> tuple[str, bytes] | None:
    if len(payload) >= 10 and payload[3:6] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", payload[6:10])
        w, h = _dims(rng, width & 0x3FFF, height & 0x3FFF)
        scale = rng.choice((0, 0, 3))
        fields = struct.pack("<HH", _clamp(w, 14) | scale << 14, _clamp(h, 14) | scale << 14)
        return f"vp8_dims({w}x{h},scale={scale})", payload[:6] + fields + payload[10:]
    if len(payload) >= 5 and payload[0] == 0x2F:
        bits = int.from_bytes(payload[1:5], "little")
        w, h = _dims(rng, (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
        bits = (bits & ~0xFFFFFFF) | _clamp(max(w, 1) - 1, 14) | _clamp(max(h, 1) - 1, 14) << 14
        version = rng.choice((0, 0, 7)) << 29
        bits = (bits & ~(7 << 29)) | version
        return f"vp8l_dims({w}x{h})", payload[:1] + bits.to_bytes(4, "little") + payload[5:]
    return None


def _webp_mutate(rng: Rng, data: bytes) -> Mutated | None:
    chunks = _riff_parse(data)
    if chunks is None:
        return None
    fourccs = [f for f, _ in chunks]
    op = rng.choice(
        (
            "reorder", "reorder", "riff_size", "chunk_size", "vp8x_dims", "vp8x_dims",
            "vp8x_flags", "bitstream_dims", "bitstream_dims", "anim", "anmf", "anmf",
            "exif", "exif", "iccp", "iccp", "xmp", "alph", "bitstream",
        )
    )  # fmt: skip
    if op == "reorder":
        label, units = _reorder(rng, [_riff_chunk(f, p) for f, p in chunks])
        i = int(label.rsplit("@", 1)[1])
        riff_body = b"WEBP" + b"".join(units)
        riff = b"RIFF" + struct.pack("<I", len(riff_body)) + riff_body
        return f"webp.{label}({fourccs[i].decode('latin-1')})", riff
    if op == "riff_size":
        value = rng.choice((0, 4, len(data) - 9, len(data) + 100, 0xFFFFFFFF))
        return f"webp.riff_size({value:#x})", data[:4] + struct.pack(
            "<I", value & 0xFFFFFFFF
        ) + data[8:]
    if op == "chunk_size":
        i = rng.randrange(len(chunks))
        offset = 12 + sum(8 + len(p) + (len(p) & 1) for _, p in chunks[:i])
        value = rng.choice((0, 1, len(chunks[i][1]) + 1, 0x7FFFFFFF, 0xFFFFFFFF - 7))
        out = bytearray(_riff(chunks))
        out[offset + 4 : offset + 8] = struct.pack("<I", value)
        return f"webp.chunk_size({fourccs[i].decode('latin-1')}={value:#x})", bytes(out)
    if op in ("vp8x_dims", "vp8x_flags"):
        if b"VP8X" not in fourccs:
            return None
        i = fourccs.index(b"VP8X")
        vp8x = bytearray(chunks[i][1].ljust(10, b"\0"))
        if op == "vp8x_dims":
            width = int.from_bytes(vp8x[4:7], "little") + 1
            height = int.from_bytes(vp8x[7:10], "little") + 1
            w, h = _dims(rng, width, height)
            vp8x[4:10] = _u24(max(w, 1) - 1) + _u24(max(h, 1) - 1)
            label = f"webp.vp8x_dims({w}x{h})"
        else:
            flip = rng.choice((0x02, 0x04, 0x08, 0x10, 0x20, 0xC1))
            vp8x[0] ^= flip
            label = f"webp.vp8x_flags(^{flip:#x})"
        chunks[i] = (b"VP8X", bytes(vp8x))
        return label, _riff(chunks)
    if op in ("bitstream_dims", "bitstream"):
        positions = [i for i, f in enumerate(fourccs) if f in (b"VP8 ", b"VP8L", b"ANMF")]
        if not positions:
            return None
        i = rng.choice(positions)
        inner: list[tuple[bytes, bytes]] | None = None
        payload = chunks[i][1]
        if fourccs[i] == b"ANMF":  # 16 bytes of frame fields, then (ALPH and) VP8 / VP8L
            inner = _riff_chunks(payload, 16)
            if not inner:
                return None
            payload = inner[-1][1]
        if op == "bitstream_dims":
            done = _vp8_dims(payload, rng)
            if done is None:
                return None
            label, payload = done
        else:
            body = bytearray(payload)
            flips = rng.choice((1, 8, 64))
            for _ in range(flips):
                if body:
                    body[rng.randrange(len(body))] ^= 1 << rng.randrange(8)
            label, payload = f"bitstream({flips})", bytes(body)
        if inner is not None:
            inner[-1] = (inner[-1][0], payload)
            payload = chunks[i][1][:16] + b"".join(_riff_chunk(f, p) for f, p in inner)
        chunks[i] = (fourccs[i], payload)
        return f"webp.{label}", _riff(chunks)
    if op == "anim":
        if b"ANIM" not in fourccs:
            return None
        i = fourccs.index(b"ANIM")
        payload = rng.choice(
            (b"", b"\xff\xff\xff\xff\xff\xff", b"\x00\x00\x00\x00\xff\xff", b"\x00")
        )
        chunks[i] = (b"ANIM", payload)
        return f"webp.anim({payload.hex()})", _riff(chunks)
    if op == "anmf":
        positions = [i for i, f in enumerate(fourccs) if f == b"ANMF"]
        if not positions:
            return None
        i = rng.choice(positions)
        frame = bytearray(chunks[i][1])
        if len(frame) < 16:
            return None
        field = rng.choice(("x", "y", "width", "height", "duration", "flags", "flood"))
        if field == "flood":
            copies = rng.choice((20, 200, 2000))
            chunks[i:i] = [chunks[i]] * copies
            return f"webp.anmf_flood({copies})", _riff(chunks)
        at = {"x": 0, "y": 3, "width": 6, "height": 9, "duration": 12}.get(field)
        if at is None:
            frame[15] = rng.choice((0xFF, 0x03, 0xFC))
            value = frame[15]
        else:
            value = rng.choice(EXTREMES)
            frame[at : at + 3] = _u24(value)
        chunks[i] = (b"ANMF", bytes(frame))
        return f"webp.anmf_{field}({value})", _riff(chunks)
    if op == "exif":
        label, block = bad_exif(rng)
        if rng.random() < 0.3:
            block = b"Exif\x00\x00" + block
        return f"webp.exif({label})", _riff(_riff_put(chunks, b"EXIF", block, 0x08))
    if op == "iccp":
        label, profile = bad_icc(rng)
        return f"webp.iccp({label})", _riff(_riff_put(chunks, b"ICCP", profile, 0x20))
    if op == "xmp":
        label, xmp = bad_xmp(rng)
        return f"webp.xmp({label})", _riff(_riff_put(chunks, b"XMP ", xmp, 0x04))
    alph = bytes([rng.choice((0x00, 0x01, 0x03, 0x3F, 0xFF))]) + rng.randbytes(rng.randint(0, 300))
    at = next((i for i, f in enumerate(fourccs) if f in (b"VP8 ", b"VP8L")), len(chunks))
    chunks.insert(at, (b"ALPH", alph))
    if fourccs[0] == b"VP8X" and chunks[0][1]:
        chunks[0] = (b"VP8X", bytes([chunks[0][1][0] | 0x10]) + chunks[0][1][1:])
    return f"webp.alph({alph[0]:#x})", _riff(chunks)


# --- AVIF (ISO-BMFF) ----------------------------------------------------------------------------

# box type -> bytes of its own fields before the child boxes
_CONTAINERS = {
    b"meta": 4, b"iprp": 0, b"ipco": 0, b"dinf": 0, b"iref": 4, b"moov": 0, b"trak": 0,
    b"mdia": 0, b"minf": 0, b"stbl": 0, b"edts": 0, b"stsd": 8, b"av01": 78,
}  # fmt: skip


@dataclass(slots=True)
class _Box:
    kind: bytes
    head: bytes  # the box's own fields before the children (or the whole payload of a leaf)
    children: list[_Box] | None
    offset: int = 0  # where it started in the parsed file


def _bmff_parse(data: bytes, start: int = 0, end: int | None = None) -> list[_Box] | None:
    end = len(data) if end is None else end
    boxes, pos = [], start
    while pos + 8 <= end:
        size = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        header = 8
        if size == 1 and pos + 16 <= end:
            size, header = int.from_bytes(data[pos + 8 : pos + 16], "big"), 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            return None
        fields = _CONTAINERS.get(kind)
        if kind == b"iinf":
            fields = 6 if data[pos + header] == 0 else 8
        children = None
        if fields is not None and header + fields <= size:
            children = _bmff_parse(data, pos + header + fields, pos + size)
        if children is None:
            boxes.append(_Box(kind, data[pos + header : pos + size], None, pos))
        else:
            own = data[pos + header : pos + header + (fields or 0)]
            boxes.append(_Box(kind, own, children, pos))
        pos += size
    return boxes if pos == end and boxes else None


def _bmff(boxes: list[_Box]) -> bytes:
    out = b""
    for box in boxes:
        body = box.head + (_bmff(box.children) if box.children is not None else b"")
        out += struct.pack(">I", len(body) + 8) + box.kind + body
    return out


def _walk(boxes: list[_Box]) -> Iterator[tuple[list[_Box], int]]:
    """(siblings, index) for every box, depth first."""
    for i, box in enumerate(boxes):
        yield boxes, i
        if box.children is not None:
            yield from _walk(box.children)


def _avif_mutate(rng: Rng, data: bytes) -> Mutated | None:
    boxes = _bmff_parse(data)
    if boxes is None:
        return None
    everything = list(_walk(boxes))

    def find(kind: bytes) -> list[_Box]:
        return [siblings[i] for siblings, i in everything if siblings[i].kind == kind]

    op = rng.choice(
        (
            "reorder", "reorder", "box_size", "ispe", "ispe", "ftyp", "iloc", "iloc", "pixi",
            "colr", "colr", "irot", "pitm", "ipma", "hdlr", "av1c", "mdat", "track_dims",
            "exif", "xmp",
        )
    )  # fmt: skip
    if op == "reorder":
        siblings, _ = rng.choice([(s, i) for s, i in everything if len(s) > 1] or everything)
        label, units = _reorder(rng, [_bmff([b]) for b in siblings])
        i = int(label.rsplit("@", 1)[1])
        name = siblings[i].kind.decode("latin-1")
        parsed = _bmff_parse(b"".join(units))
        if parsed is None:
            return None
        siblings[:] = parsed
        return f"avif.{label}({name})", _bmff(boxes)
    if op == "box_size":
        box = rng.choice([s[i] for s, i in everything])
        actual = int.from_bytes(data[box.offset : box.offset + 4], "big")
        value = rng.choice((0, 1, 7, 8, actual - 1, actual + 1, 0xFFFFFFFF))
        out = bytearray(data)
        out[box.offset : box.offset + 4] = (value & 0xFFFFFFFF).to_bytes(4, "big")
        return f"avif.box_size({box.kind.decode('latin-1')}={value})", bytes(out)
    if op == "ispe":
        found = find(b"ispe")
        if not found:
            return None
        targets = found if rng.random() < 0.5 else [rng.choice(found)]
        width, height = struct.unpack(">II", targets[0].head[4:12].ljust(8, b"\0"))
        w, h = _dims(rng, width, height)
        for box in targets:
            box.head = box.head[:4] + struct.pack(">II", _clamp(w, 32), _clamp(h, 32))
        return f"avif.ispe({w}x{h},{len(targets)}/{len(found)})", _bmff(boxes)
    if op == "ftyp":
        ftyp = find(b"ftyp")
        if not ftyp:
            return None
        brands = rng.choice(
            (
                b"avif\0\0\0\0mif1",
                b"avis\0\0\0\0avis",
                b"avif\0\0\0\0",
                b"mif1\0\0\0\0avif" + b"x" * 300,
                b"avif\xff\xff\xff\xff",
            )
        )
        ftyp[0].head = brands
        return f"avif.ftyp({brands[:4].decode()},{len(brands)})", _bmff(boxes)
    if op == "iloc":
        iloc = find(b"iloc")
        if not iloc:
            return None
        done = _iloc_mutate(rng, iloc[0].head)
        if done is None:
            return None
        label, iloc[0].head = done
        return f"avif.iloc({label})", _bmff(boxes)
    if op in ("pixi", "irot", "pitm", "hdlr", "av1c"):
        kind = {
            "pixi": b"pixi",
            "irot": b"irot",
            "pitm": b"pitm",
            "hdlr": b"hdlr",
            "av1c": b"av1C",
        }[op]
        found = find(kind)
        if not found:
            return None
        box = rng.choice(found)
        body = bytearray(box.head)
        if op == "pixi":
            body[4:] = rng.choice((b"\x00", b"\xff" + b"\x08" * 255, b"\x03\x00\x00\x00", b"\x01"))
        elif op == "irot":
            body[:] = bytes([rng.choice((1, 2, 3, 0xFF, 0xFC))])
        elif op == "pitm":
            body[4:6] = rng.choice((b"\x00\x00", b"\xff\xff", b"\x00\x09"))
        elif op == "hdlr" and len(body) >= 12:
            body[8:12] = rng.choice((b"vide", b"\0\0\0\0", b"auxv"))
        elif len(body) >= 4:
            at = rng.randrange(4)
            body[at] = rng.choice((0x00, 0xFF, 0x7F, 0x81 ^ body[at]))
        box.head = bytes(body)
        return f"avif.{op}({bytes(body[:8]).hex()})", _bmff(boxes)
    if op == "colr":
        found = find(b"colr")
        if not found:
            ipco = find(b"ipco")
            if not ipco or ipco[0].children is None:
                return None
            found = [_Box(b"colr", b"nclx" + b"\0" * 7, None)]
            ipco[0].children.append(found[0])
        box = rng.choice(found)
        if rng.random() < 0.6:
            label, profile = bad_icc(rng)
            box.head = b"prof" + profile
        else:
            values = rng.choice(((255, 255, 255), (0, 0, 0), (2, 2, 2), (1, 13, 15), (22, 18, 14)))
            box.head = b"nclx" + struct.pack(">HHHB", *values, rng.choice((0, 0x80, 0xFF)))
            label = f"nclx{values}"
        return f"avif.colr({label})", _bmff(boxes)
    if op == "ipma":
        found = find(b"ipma")
        if not found:
            return None
        body = bytearray(found[0].head)
        for _ in range(rng.choice((1, 3))):
            if len(body) > 4:
                body[rng.randrange(4, len(body))] = rng.choice((0x00, 0xFF, 0x87, 0x09))
        found[0].head = bytes(body)
        return "avif.ipma", _bmff(boxes)
    if op == "mdat":
        found = find(b"mdat")
        if not found:
            return None
        body = bytearray(found[0].head)
        flips = rng.choice((1, 8, 64))
        for _ in range(flips):
            if body:
                body[rng.randrange(len(body))] ^= 1 << rng.randrange(8)
        found[0].head = bytes(body)
        return f"avif.mdat({flips})", _bmff(boxes)
    if op == "track_dims":
        found = find(b"tkhd") + find(b"av01")
        if not found:
            return None
        box = rng.choice(found)
        w, h = _dims(rng, 16, 16)
        body = bytearray(box.head)
        if box.kind == b"tkhd" and len(body) >= 8:
            body[-8:] = struct.pack(">II", _clamp(w, 16) << 16, _clamp(h, 16) << 16)
        elif len(body) >= 28:
            body[24:28] = struct.pack(">HH", _clamp(w, 16), _clamp(h, 16))
        box.head = bytes(body)
        return f"avif.{box.kind.decode()}_dims({w}x{h})", _bmff(boxes)
    if op == "exif":
        label, block = bad_exif(rng)
        order = data.find(b"MM\x00*") if data.find(b"MM\x00*") >= 0 else data.find(b"II*\x00")
        if order < 0:
            return None
        return _inplace(rng, data, data[order : order + 4], block, f"avif.exif({label})")
    label, xmp = bad_xmp(rng)
    return _inplace(rng, data, b"<?xpacket", xmp, f"avif.xmp({label})")


def _iloc_mutate(rng: Rng, body: bytes) -> tuple[str, bytes] | None:
    """One field of one item location (offset, length, count, base offset) set to an extreme."""
    if len(body) < 8:
        return None
    version = body[0]
    offset_size, length_size = body[4] >> 4, body[4] & 15
    base_size, index_size = body[5] >> 4, (body[5] & 15) if version in (1, 2) else 0
    pos = 6
    count_size = 4 if version == 2 else 2
    count = int.from_bytes(body[pos : pos + count_size], "big")
    fields: list[tuple[str, int, int]] = [("item_count", pos, count_size)]
    pos += count_size
    for _ in range(min(count, 64)):
        pos += 4 if version == 2 else 2
        if version in (1, 2):
            fields.append(("construction_method", pos, 2))
            pos += 2
        pos += 2
        if base_size:
            fields.append(("base_offset", pos, base_size))
        pos += base_size
        fields.append(("extent_count", pos, 2))
        extents = int.from_bytes(body[pos : pos + 2], "big")
        pos += 2
        for _ in range(min(extents, 64)):
            pos += index_size
            if offset_size:
                fields.append(("extent_offset", pos, offset_size))
            pos += offset_size
            if length_size:
                fields.append(("extent_length", pos, length_size))
            pos += length_size
    fields = [f for f in fields if f[1] + f[2] <= len(body)]
    if not fields:
        return None
    name, at, size = rng.choice(fields)
    value = rng.choice((0, 1, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 40))
    value &= (1 << (8 * size)) - 1
    return f"{name}={value:#x}", body[:at] + value.to_bytes(size, "big") + body[at + size :]


# --- GIF ----------------------------------------------------------------------------------------


def _gif_parse(data: bytes) -> tuple[bytes, list[bytes], bytes] | None:
    """(header + screen descriptor + global colour table, blocks, trailer and what follows)."""
    if data[:6] not in (b"GIF87a", b"GIF89a") or len(data) < 13:
        return None
    packed = data[10]
    pos = 13 + (3 * (2 << (packed & 7)) if packed & 0x80 else 0)
    head, blocks = data[:pos], []
    while pos < len(data):
        start = pos
        if data[pos] == 0x21:
            pos += 2
        elif data[pos] == 0x2C:
            if pos + 10 > len(data):
                return None
            flags = data[pos + 9]
            pos += 10 + (3 * (2 << (flags & 7)) if flags & 0x80 else 0) + 1
        else:
            break
        while pos < len(data) and data[pos] != 0:
            pos += 1 + data[pos]
        pos += 1
        if pos > len(data):
            return None
        blocks.append(data[start:pos])
    return (head, blocks, data[pos:]) if blocks else None


def _gif_mutate(rng: Rng, data: bytes) -> Mutated | None:
    parsed = _gif_parse(data)
    if parsed is None:
        return None
    head, blocks, tail = parsed
    images = [i for i, b in enumerate(blocks) if b[0] == 0x2C]
    op = rng.choice(
        (
            "reorder", "reorder", "screen_dims", "screen_dims", "frame_dims", "frame_dims",
            "frame_pos", "lzw_min", "frame_flood", "subblock", "trailer", "gct", "lct", "gce",
            "netscape", "comment", "icc", "xmp", "interlace",
        )
    )  # fmt: skip
    if op == "reorder":
        label, units = _reorder(rng, blocks)
        return f"gif.{label}", head + b"".join(units) + tail
    if op == "screen_dims":
        width, height = struct.unpack("<HH", head[6:10])
        w, h = _dims(rng, width, height)
        head = head[:6] + struct.pack("<HH", _clamp(w, 16), _clamp(h, 16)) + head[10:]
        return f"gif.screen_dims({w}x{h})", head + b"".join(blocks) + tail
    if op in ("frame_dims", "frame_pos", "lzw_min", "lct", "interlace", "subblock"):
        if not images:
            return None
        i = rng.choice(images)
        block = bytearray(blocks[i])
        if op == "frame_dims":
            width, height = struct.unpack("<HH", block[5:9])
            w, h = _dims(rng, width, height)
            block[5:9] = struct.pack("<HH", _clamp(w, 16), _clamp(h, 16))
            label = f"frame_dims({w}x{h})"
        elif op == "frame_pos":
            x, y = rng.choice(EXTREMES), rng.choice(EXTREMES)
            block[1:5] = struct.pack("<HH", _clamp(x, 16), _clamp(y, 16))
            label = f"frame_pos({x},{y})"
        elif op == "lzw_min":
            flags = block[9]
            at = 10 + (3 * (2 << (flags & 7)) if flags & 0x80 else 0)
            value = rng.choice((0, 1, 9, 11, 12, 13, 255))
            block[at] = value
            label = f"lzw_min({value})"
        elif op == "lct":
            block[9] ^= rng.choice((0x80, 0x07, 0x87))
            label = f"lct({block[9]:#x})"
        elif op == "interlace":
            block[9] ^= 0x40
            label = "interlace"
        else:
            flags = block[9]
            at = 11 + (3 * (2 << (flags & 7)) if flags & 0x80 else 0)
            if at >= len(block):
                return None
            block[at] = rng.choice((0, 1, 255))
            label = f"subblock({block[at]})"
        blocks[i] = bytes(block)
        return f"gif.{label}", head + b"".join(blocks) + tail
    if op == "frame_flood":
        if not images:
            return None
        i = rng.choice(images)
        frame = (
            blocks[i - 1 : i + 1]
            if i > 0 and blocks[i - 1][:2] == b"\x21\xf9"
            else blocks[i : i + 1]
        )
        copies = rng.choice((17, 101, 1000))
        return f"gif.frame_flood({copies})", head + b"".join(blocks) + b"".join(
            frame
        ) * copies + tail
    if op == "trailer":
        style = rng.choice(("missing", "early", "garbage"))
        if style == "missing":
            return "gif.trailer(missing)", head + b"".join(blocks)
        if style == "early":
            return "gif.trailer(early)", head + b"\x3b" + b"".join(blocks) + tail
        return "gif.trailer(garbage)", head + b"".join(blocks) + rng.randbytes(100) + tail
    if op == "gct":
        packed = head[10] ^ rng.choice((0x80, 0x07, 0x87, 0x70))
        return f"gif.gct({packed:#x})", head[:10] + bytes([packed]) + head[11:] + b"".join(
            blocks
        ) + tail
    if op == "gce":
        size = rng.choice((4, 4, 0, 255))
        flags = rng.choice((0x1C, 0x01, 0xFF, 0x0D))
        gce = (
            b"\x21\xf9"
            + bytes([size, flags])
            + struct.pack("<HB", rng.choice((0, 0xFFFF)), 255)
            + b"\x00"
        )
        at = rng.choice(images) if images else 0
        return f"gif.gce(size={size},flags={flags:#x})", head + b"".join(
            [*blocks[:at], gce, *blocks[at:]]
        ) + tail
    if op == "netscape":
        loops = rng.choice((0, 0xFFFF))
        size = rng.choice((11, 10, 255))
        ext = (
            b"\x21\xff"
            + bytes([size])
            + b"NETSCAPE2.0"
            + rng.choice(
                (b"\x03\x01" + struct.pack("<H", loops) + b"\x00", b"\x01\x01\x00", b"\x05\x01")
            )
        )
        return f"gif.netscape(size={size},loops={loops})", head + ext + b"".join(blocks) + tail
    if op == "comment":
        count = rng.choice((1, 400))
        comment = b"\x21\xfe" + (b"\xff" + rng.randbytes(255)) * count + rng.choice((b"\x00", b""))
        return f"gif.comment({count})", head + comment + b"".join(blocks) + tail
    if op == "icc":
        label, profile = bad_icc(rng)
        body = b"".join(
            bytes([len(profile[i : i + 255])]) + profile[i : i + 255]
            for i in range(0, len(profile), 255)
        )
        ext = b"\x21\xff\x0bICCRGBG1012" + body + b"\x00"
        return f"gif.icc({label})", head + ext + b"".join(blocks) + tail
    label, xmp = bad_xmp(rng)
    ext = b"\x21\xff\x0bXMP DataXMP" + xmp + bytes(range(255, -1, -1)) + b"\x00"
    return f"gif.xmp({label})", head + ext + b"".join(blocks) + tail


# --- HEIC / HEIF (ISO-BMFF, as AVIF, with HEVC items) -------------------------------------------


def _heif_mutate(rng: Rng, data: bytes) -> Mutated | None:
    """HEIF's own structure half the time (items, references, hvcC, brands), AVIF's box
    surgery otherwise (sizes, ispe, iloc, colr, irot, pitm, mdat, EXIF, XMP)."""
    if rng.random() < 0.5:
        done = _avif_mutate(rng, data)
        return None if done is None else ("heif." + done[0].removeprefix("avif."), done[1])
    boxes = _bmff_parse(data)
    if boxes is None:
        return None
    found: dict[bytes, list[_Box]] = {}
    for siblings, i in _walk(boxes):
        found.setdefault(siblings[i].kind, []).append(siblings[i])
    op = rng.choice(("hidden", "iref", "iref", "item_flood", "hvcc", "hvcc", "ftyp"))
    if op == "ftyp" and b"ftyp" in found:
        brands = rng.choice(
            (
                b"heic\0\0\0\0mif1heic",
                b"mif1\0\0\0\0",
                b"msf1\0\0\0\0hevcmsf1",
                b"heic\0\0\0\0avif",
                b"heix\xff\xff\xff\xff" + b"y" * 300,
            )
        )
        found[b"ftyp"][0].head = brands
        return f"heif.ftyp({brands[:4].decode()},{len(brands)})", _bmff(boxes)
    if op == "hidden" and b"infe" in found:
        for box in found[b"infe"]:
            if rng.random() < 0.5 and len(box.head) > 4:
                box.head = box.head[:3] + bytes([box.head[3] ^ 0x01]) + box.head[4:]
        return "heif.hidden", _bmff(boxes)
    if op == "item_flood" and b"infe" in found and b"iinf" in found:
        infe = rng.choice(found[b"infe"])
        copies = rng.choice((20, 120, 600))
        iinf = found[b"iinf"][0]
        assert iinf.children is not None
        for n in range(copies):
            head = bytearray(infe.head)
            if len(head) >= 6 and head[0] == 2:
                head[4:6] = struct.pack(">H", 1000 + n)  # a new item id
            iinf.children.append(_Box(b"infe", bytes(head), None))
        return f"heif.item_flood({copies})", _bmff(boxes)
    if op == "iref" and b"iref" in found and found[b"iref"][0].children:
        references = found[b"iref"][0].children
        assert references is not None
        ref = rng.choice(references)
        style = rng.choice(("kind", "ids", "count", "self"))
        body = bytearray(ref.head)
        if style == "kind":
            ref.kind = rng.choice((b"thmb", b"auxl", b"dimg", b"cdsc", b"base"))
        elif style == "ids" and len(body) >= 6:
            at = rng.choice((0, 4))  # the referring item, or the first one referred to
            body[at : at + 2] = rng.choice((b"\xff\xff", b"\x00\x00"))
        elif style == "count" and len(body) >= 4:
            body[2:4] = rng.choice((b"\xff\xff", b"\x00\x00", b"\x00\x09"))
        elif len(body) >= 6:
            body[4:6] = body[0:2]  # refers to itself
        ref.head = bytes(body)
        return f"heif.iref({style},{ref.kind.decode('latin-1')})", _bmff(boxes)
    if b"hvcC" not in found:
        return None
    box = rng.choice(found[b"hvcC"])
    body = bytearray(box.head)
    for _ in range(rng.choice((1, 4, 16))):
        if body:
            body[rng.randrange(len(body))] = rng.choice((0x00, 0xFF, 0x7F, rng.randrange(256)))
    box.head = bytes(body)
    return "heif.hvcc", _bmff(boxes)


STRUCTURAL: dict[str, Callable[[Rng, bytes], Mutated | None]] = {
    "png": _png_mutate,
    "jpeg": _jpeg_mutate,
    "webp": _webp_mutate,
    "avif": _avif_mutate,
    "gif": _gif_mutate,
    "heic": _heif_mutate,
    "heif": _heif_mutate,
}

_OTHER_CONTENT_TYPES = (
    "image/jpg",
    "",
    "application/octet-stream",
    "IMAGE/PNG",
    "image/png; charset=binary",
    *CONTENT_TYPES.values(),
)


def make_case(seed: int, index: int) -> tuple[str, bytes, str]:
    """Case `index` of `seed`: the same bytes every time, without making the ones before it."""
    rng = random.Random(f"imagery-fuzz/{seed}/{index}")
    base = rng.choice(bases())
    data, labels = base.data, []
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3))):
        done: Mutated | None = None
        for _attempt in range(4):
            structural = rng.random() < 0.6
            try:
                done = (
                    STRUCTURAL[base.kind](rng, data)
                    if structural
                    else rng.choice(GENERIC)(rng, data)
                )
            except (IndexError, ValueError, struct.error):  # a parser met bytes it cannot walk
                done = None
            if done is not None:
                break
        if done is None:
            done = bitflip(rng, data)
        labels.append(done[0])
        data = done[1]
    content_type = CONTENT_TYPES[base.kind]
    if rng.random() < 0.04:
        content_type = rng.choice(_OTHER_CONTENT_TYPES)
        labels.append(f"declared={content_type!r}")
    return f"s{seed}-i{index}-{base.name}-{'+'.join(labels)}", data, content_type


def cases(seed: int, count: int) -> Iterator[tuple[str, bytes, str]]:
    """`count` malformed files, deterministic for `seed`."""
    for index in range(count):
        yield make_case(seed, index)


# --- the worst ones: for the isolated runner, with the production limits -------------------


def _png_rows(
    width: int, height: int, claimed: tuple[int, int] | None = None, rows: int | None = None
) -> bytes:
    """An RGB PNG of zeros, compressed row by row (never all in memory); its header may claim
    another size and its data may stop after `rows` rows."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + 3 * width)
    idat = b"".join(compressor.compress(row) for _ in range(height if rows is None else rows))
    idat += compressor.flush()
    w, h = claimed or (width, height)
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return _png([(b"IHDR", header), (b"IDAT", idat), (b"IEND", b"")])


def _worst() -> Iterator[tuple[str, bytes, str]]:
    png, gif, jpeg, webp = (CONTENT_TYPES[k] for k in ("png", "gif", "jpeg", "webp"))
    yield "worst-png-flood-at-the-pixel-limit(8000x5000)", _png_rows(8000, 5000), png
    yield (
        "worst-png-flood-over-the-limits(100000x100000)",
        _png_rows(64, 64, (100_000, 100_000)),
        png,
    )
    yield "worst-png-flood-header-only(8000x5000,16-rows)", _png_rows(8000, 5000, rows=16), png
    chunks = _png_parse(_png_rows(64, 64)) or []
    texts = [(b"zTXt", b"k%d\x00\x00" % i + _zeros_compressed(1 << 20)) for i in range(70)]
    yield "worst-png-70-ztxt-bombs", _png(chunks[:1] + texts + chunks[1:]), png
    iccp = (b"iCCP", b"bomb\x00\x00" + _zeros_compressed(64 << 20))
    yield "worst-png-iccp-bomb(64MiB)", _png([chunks[0], iccp, *chunks[1:]]), png
    apng = _png_parse(next(b.data for b in bases() if b.name == "apng")) or []
    apng = [(k, struct.pack(">II", 0xFFFFFFFF, 0) if k == b"acTL" else p) for k, p in apng]
    yield "worst-apng-claims-4294967295-frames", _png(apng), png
    exif = _Tiff(">")
    for tag in range(_TIFF_MAX_ENTRIES):
        exif.add(0x010F + tag, _ASCII, (1 << 30), exif.pack("I", 8))
    block = exif.to_bytes(count=0xFFFF) + b"\x00" * (12 * 0xFFFF)
    yield "worst-png-exif-65535-entries", _png(_png_put(chunks, b"eXIf", block)), png

    frame = _save(Image.new("P", (1000, 1000), 3), "GIF")
    parsed = _gif_parse(frame)
    assert parsed is not None
    head, blocks, tail = parsed
    gce = b"\x21\xf9\x04\x08\x01\x00\x00\x00"
    yield "worst-gif-99-frames-of-1000x1000", head + (gce + blocks[-1]) * 99 + tail, gif
    yield "worst-gif-101-frames", head + (gce + blocks[-1]) * 101 + tail, gif
    screen = head[:6] + struct.pack("<HH", 65535, 65535) + head[10:]
    yield "worst-gif-screen-65535x65535", screen + b"".join(blocks) + tail, gif

    progressive = (
        _jpeg_parse(_save(Image.new("RGB", (2000, 2000), (90, 120, 30)), "JPEG", progressive=True))
        or []
    )
    last_scan = max(i for i, s in enumerate(progressive) if _marker(s) == 0xDA and len(s) < 64)
    refinement = progressive[last_scan - 1 : last_scan + 1]
    flood = progressive[:-1] + refinement * 5000 + progressive[-1:]
    yield "worst-jpeg-progressive-5000-scans(2000x2000)", b"".join(flood), jpeg
    small = _jpeg_parse(next(b.data for b in bases() if b.name == "jpeg_exif_icc")) or []
    sof = next(i for i, s in enumerate(small) if _marker(s) == 0xC0)
    small[sof] = small[sof][:5] + struct.pack(">HH", 4000, 10000) + small[sof][9:]
    yield "worst-jpeg-claims-10000x4000", b"".join(small), jpeg
    mpf = _Tiff(">")
    mpf.add(0xB000, _UNDEFINED, 4, b"0100")
    mpf.add(0xB001, _LONG, 1, mpf.pack("I", (1 << 31) - 1))
    entries = struct.pack(">IIIHH", 0x20000, 1 << 30, 0xFFFFFF00, 0, 0) * 4
    mpf.add(0xB002, _UNDEFINED, 16 * ((1 << 31) - 1), mpf.pack("I", mpf.data_offset("e", entries)))
    plain = _jpeg_parse(next(b.data for b in bases() if b.name == "jpeg_exif_icc")) or []
    with_mpf = _jpeg_put(plain, _segment(0xE2, b"MPF\x00" + mpf.to_bytes()), lambda s: False)
    yield "worst-jpeg-mpf-claims-2147483647-pictures", b"".join(with_mpf), jpeg

    animated = _riff_parse(next(b.data for b in bases() if b.name == "webp_animated")) or []
    canvas = [(f, (p[:4] + _u24(5999) + _u24(5999)) if f == b"VP8X" else p) for f, p in animated]
    frames = [c for c in canvas if c[0] == b"ANMF"]
    others = [c for c in canvas if c[0] != b"ANMF"]
    yield "worst-webp-canvas-6000x6000-10-frames", _riff(others + (frames * 4)[:10]), webp
    yield "worst-webp-2000-frames", _riff(others + frames * 700), webp
    avif = _bmff_parse(next(b.data for b in bases() if b.name == "avif_still")) or []
    for siblings, i in _walk(avif):
        if siblings[i].kind == b"ispe":
            siblings[i].head = siblings[i].head[:4] + struct.pack(
                ">II", (1 << 31) - 1, (1 << 31) - 1
            )
    yield "worst-avif-ispe-2147483647-square", _bmff(avif), CONTENT_TYPES["avif"]

    heic = _bmff_parse(next(b.data for b in bases() if b.name == "heic_grid")) or []
    for siblings, i in _walk(heic):
        if siblings[i].kind == b"ispe":
            siblings[i].head = siblings[i].head[:4] + struct.pack(">II", 60_000, 60_000)
    yield "worst-heic-ispe-60000-square", _bmff(heic), CONTENT_TYPES["heic"]
    pictures = [Image.new("RGB", (16, 16), (n, 0, 0)) for n in range(101)]
    many = _save(pictures[0], "HEIF", save_all=True, append_images=pictures[1:], quality=10)
    yield "worst-heic-101-top-level-images", many, CONTENT_TYPES["heic"]
    big = _save(Image.new("RGB", (2048, 2048), (20, 90, 160)), "HEIF", quality=10, tile_size=256)
    yield "worst-heic-grid-2048x2048-cut-short", big[: len(big) * 2 // 3], CONTENT_TYPES["heic"]


@functools.cache
def worst_cases() -> tuple[tuple[str, bytes, str], ...]:
    """Files made to cost the most: pixel floods at and past the limits, frame floods, scan
    floods, decompression bombs in metadata, headers claiming billions. Meant for the
    isolated runner with the production `Limits()`, where a job may be killed."""
    return tuple(_worst())


def _main(argv: list[str]) -> int:
    seed, index = int(argv[0]), int(argv[1])
    name, data, content_type = make_case(seed, index)
    print(f"{name}\n{len(data)} bytes declared {content_type!r}; limits {LIMITS}")
    try:
        processed = verify_and_render(data, content_type, LIMITS, spec_for(index))
    except Rejected as rejected:
        print(f"Rejected {rejected.reason}: {rejected.detail}")
        return 0
    print(f"Processed {processed.verified} with {len(processed.variants)} variants")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
