"""Real image files made by the tests, including hostile ones."""

from __future__ import annotations

import io
import os
import struct
import zlib

from PIL import GifImagePlugin, Image
from pillow_heif import register_heif_opener

register_heif_opener()  # Pillow's "HEIF" format (no options changed: verify sets its own)


def jpeg(
    width: int = 64, height: int = 48, *, orientation: int | None = None, quality: int = 90
) -> bytes:
    image = Image.new("RGB", (width, height), (200, 30, 30))
    image.paste((30, 200, 30), (0, 0, width // 2, height // 2))
    buffer = io.BytesIO()
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    image.save(buffer, "JPEG", quality=quality, exif=exif.tobytes())
    return buffer.getvalue()


def png(width: int = 64, height: int = 48, *, alpha: bool = False) -> bytes:
    image = Image.new(
        "RGBA" if alpha else "RGB", (width, height), (10, 20, 200, 128) if alpha else (10, 20, 200)
    )
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def webp(width: int = 64, height: int = 48) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "orange").save(buffer, "WEBP")
    return buffer.getvalue()


def gif(frames: int = 3, size: tuple[int, int] = (16, 16)) -> bytes:
    images = [
        Image.new("L", size, (i * 37) % 256) for i in range(frames)
    ]  # consecutive frames differ
    buffer = io.BytesIO()
    images[0].save(buffer, "GIF", save_all=True, append_images=images[1:], duration=10, loop=0)
    return buffer.getvalue()


def avif(width: int = 32, height: int = 24) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "purple").save(buffer, "AVIF")
    return buffer.getvalue()


GPS_LATITUDE = (52.0, 22.0, 7.5)


def heic(
    width: int = 64,
    height: int = 48,
    *,
    orientation: int | None = None,
    gps: bool = False,
    frames: int = 1,
    tile_size: int = 0,
) -> bytes:
    """A HEIC as a phone writes one: HEVC, brands heic + mif1, EXIF (an orientation becomes
    the irot/imir transform libheif applies, the EXIF tag then says 1), optionally a GPS
    position, several top-level images, or a grid of tiles."""
    image = Image.new("RGB", (width, height), (200, 30, 30))
    image.paste((30, 200, 30), (0, 0, width // 2, height // 2))
    exif = Image.Exif()
    exif[0x010F] = "imagery-tests"
    if orientation is not None:
        exif[0x0112] = orientation
    if gps:
        exif[0x8825] = {1: "N", 2: GPS_LATITUDE, 3: "E", 4: (4.0, 53.0, 0.0)}
    more = [Image.new("RGB", (width, height), (i * 40 % 256, 90, 90)) for i in range(1, frames)]
    buffer = io.BytesIO()
    image.save(
        buffer,
        "HEIF",
        quality=60,
        exif=exif.tobytes(),
        save_all=frames > 1,
        append_images=more,
        tile_size=tile_size,
    )
    return buffer.getvalue()


def heif_without_hevc_brands(data: bytes) -> bytes:
    """The same file with only HEIF structure brands (mif1, miaf) in its ftyp."""
    size = int.from_bytes(data[:4], "big")
    hevc = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs")
    brands = b"".join(
        b"miaf" if data[i : i + 4] in hevc else data[i : i + 4] for i in range(16, size, 4)
    )
    return data[:8] + b"mif1" + data[12:16] + brands + data[size:]


def tiff() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "white").save(buffer, "TIFF")
    return buffer.getvalue()


def bmp() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "white").save(buffer, "BMP")
    return buffer.getvalue()


def psd() -> bytes:
    """A Photoshop header: signature, version 1, 3 channels, 8x8, 8 bits, RGB."""
    return b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, 8, 8, 8, 3) + b"\x00" * 64


def truncated_jpeg() -> bytes:
    data = jpeg(400, 300, quality=95)
    return data[: len(data) // 2]


def jpeg_with_malformed_exif() -> bytes:
    """A small JPEG whose EXIF says "rotate" (Orientation 6) and stores ResolutionUnit, a SHORT
    tag, as a LONG of 70000: Pillow's EXIF transpose fails on it with `struct.error`."""
    ifd = (
        struct.pack(">H", 2)
        + struct.pack(">HHIHH", 0x0112, 3, 1, 6, 0)
        + struct.pack(">HHII", 0x0128, 4, 1, 70000)
        + struct.pack(">I", 0)
    )
    app1 = b"Exif\x00\x00" + b"MM\x00*" + struct.pack(">I", 8) + ifd
    body = jpeg(8, 8)
    return body[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + body[2:]


def sparse_gif(frames: int = 26, canvas: tuple[int, int] = (4000, 4000), step: int = 150) -> bytes:
    """A large logical screen with 1x1 frames placed across it, written by Pillow's GIF encoder
    one frame at a time: a tiny file whose every frame decodes onto the whole canvas."""
    screen = Image.new("P", canvas)
    screen.putpalette([0, 0, 0, 255, 255, 255])
    header, _ = GifImagePlugin.getheader(screen, info={"loop": 0, "duration": 10})
    placed = []
    for i in range(frames):
        dot = Image.new("P", (1, 1), i % 2)
        dot.putpalette([0, 0, 0, 255, 255, 255])
        offset = ((i * step) % canvas[0], (i * step) % canvas[1])
        placed.append(b"".join(GifImagePlugin.getdata(dot, offset=offset, duration=10)))
    return b"".join(header) + b"".join(placed) + b";"


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload))
    )


def pixel_flood_png(width: int = 30_000, height: int = 30_000) -> bytes:
    """A few hundred bytes that claim width x height pixels (a decompression bomb)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (1 + 3 * 64) * 64)  # a little real data; the rest is missing
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", rows)
        + _chunk(b"IEND", b"")
    )


def html() -> bytes:
    return b"<!doctype html><html><body><script>alert(1)</script></body></html>"


def random_bytes(size: int = 4096) -> bytes:
    return os.urandom(size)
