"""Frame counts and canvas sizes read from container structure alone, against files made here
with Pillow, the early stop past the frame limit, and hostile bytes (pure function: no I/O)."""

from __future__ import annotations

import io
import random
import struct
import warnings
import zlib
from collections.abc import Callable
from functools import cache

import pytest
from PIL import AvifImagePlugin, GifImagePlugin, Image

from imagery.processor.adapters.containers import ContainerError, animation_budget
from tests import images

MAX_FRAMES = 100
FORMATS = ("gif", "png", "webp", "avif")


def _frames(count: int, size: tuple[int, int], mode: str = "RGB") -> list[Image.Image]:
    """Consecutive frames differ, so no encoder merges them."""
    return [Image.new(mode, size, (i * 37 % 256, 90, 200 - i * 5, 255)) for i in range(count)]


def _save(fmt: str, frames: list[Image.Image], **params: object) -> bytes:
    buffer = io.BytesIO()
    if len(frames) > 1:
        params.update(save_all=True, append_images=frames[1:])
    frames[0].save(buffer, fmt, **params)
    return buffer.getvalue()


def _dot(index: int) -> Image.Image:
    dot = Image.new("P", (1, 1), index % 2)
    dot.putpalette([0, 0, 0, 255, 255, 255])
    return dot


def _gif_header(canvas: tuple[int, int]) -> bytes:
    screen = Image.new("P", canvas)
    screen.putpalette([0, 0, 0, 255, 255, 255])
    header, _ = GifImagePlugin.getheader(screen, info={"loop": 0, "duration": 10})
    return b"".join(header)


def _gif_frame(index: int, offset: tuple[int, int]) -> bytes:
    return b"".join(GifImagePlugin.getdata(_dot(index), offset=offset, duration=10))


@cache
def tiny_frames_gif(frames: int) -> bytes:
    return _gif_header((16, 16)) + _gif_frame(0, (0, 0)) * frames + b";"


@cache
def samples() -> dict[str, tuple[str, bytes, tuple[int, int, int]]]:
    """name: (format, bytes, the expected (frames, width, height))."""
    return {
        "gif-animated": ("gif", _save("GIF", _frames(7, (40, 30)), duration=20), (7, 40, 30)),
        "gif-still": ("gif", _save("GIF", _frames(1, (17, 9))), (1, 17, 9)),
        "gif-sparse": ("gif", images.sparse_gif(), (26, 4000, 4000)),
        "png-animated": ("png", _save("PNG", _frames(6, (33, 21))), (6, 33, 21)),
        "png-still": ("png", _save("PNG", _frames(1, (33, 21), "RGBA")), (1, 33, 21)),
        "webp-animated": ("webp", _save("WEBP", _frames(5, (40, 30))), (5, 40, 30)),
        "webp-animated-lossless": (
            "webp",
            _save("WEBP", _frames(4, (25, 19)), lossless=True),
            (4, 25, 19),
        ),
        "webp-still-lossy": ("webp", _save("WEBP", _frames(1, (41, 29))), (1, 41, 29)),
        "webp-still-lossless": (
            "webp",
            _save("WEBP", _frames(1, (41, 29)), lossless=True),
            (1, 41, 29),
        ),
        "webp-still-alpha": ("webp", _save("WEBP", _frames(1, (41, 29), "RGBA")), (1, 41, 29)),
        "avif-sequence": ("avif", _save("AVIF", _frames(5, (40, 30))), (5, 40, 30)),
        "avif-sequence-alpha": ("avif", _save("AVIF", _frames(3, (24, 16), "RGBA")), (3, 24, 16)),
        "avif-still": ("avif", _save("AVIF", _frames(1, (32, 24))), (1, 32, 24)),
        "avif-still-alpha": ("avif", _save("AVIF", _frames(1, (32, 24), "RGBA")), (1, 32, 24)),
    }


SAMPLE_NAMES = (
    "gif-animated",
    "gif-still",
    "gif-sparse",
    "png-animated",
    "png-still",
    "webp-animated",
    "webp-animated-lossless",
    "webp-still-lossy",
    "webp-still-lossless",
    "webp-still-alpha",
    "avif-sequence",
    "avif-sequence-alpha",
    "avif-still",
    "avif-still-alpha",
)


def _pillow_budget(data: bytes) -> tuple[int, int, int]:
    """What Pillow reports from headers (n_frames does not decode frames)."""
    with Image.open(io.BytesIO(data)) as image:
        return getattr(image, "n_frames", 1), *image.size


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _after_ihdr(data: bytes, *chunks: bytes) -> bytes:
    end_of_ihdr = 8 + 8 + 13 + 4
    return data[:end_of_ihdr] + b"".join(chunks) + data[end_of_ihdr:]


def _retype_box(data: bytes, old: bytes, new: bytes) -> bytes:
    """The one box of type `old` renamed `new` (same length: the layout is unchanged)."""
    assert data.count(old) == 1
    return data.replace(old, new)


def _top_level_boxes(data: bytes) -> list[tuple[int, int]]:
    """(offset, size) of each top-level ISO-BMFF box of a well-formed file."""
    boxes, pos = [], 0
    while pos < len(data):
        size = struct.unpack_from(">I", data, pos)[0]
        boxes.append((pos, size))
        pos += size
    return boxes


def test_avif_plugin_is_present() -> None:
    assert AvifImagePlugin.SUPPORTED


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_frames_and_canvas_from_the_container(name: str) -> None:
    fmt, data, expected = samples()[name]
    assert animation_budget(data, fmt, max_frames=MAX_FRAMES) == expected


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_agrees_with_pillow(name: str) -> None:
    fmt, data, _ = samples()[name]
    assert animation_budget(data, fmt, max_frames=MAX_FRAMES) == _pillow_budget(data)


def test_jpeg_has_no_container_answer() -> None:
    data = _save("JPEG", _frames(1, (20, 10)))
    assert animation_budget(data, "jpeg", max_frames=MAX_FRAMES) is None


def test_an_unknown_format_name_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="tiff") as caught:
        animation_budget(b"II*\x00", "tiff", max_frames=MAX_FRAMES)
    assert not isinstance(caught.value, ContainerError)


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_frames_past_the_limit_are_reported_as_limit_plus_one(name: str) -> None:
    fmt, data, (frames, width, height) = samples()[name]
    if frames == 1:
        assert animation_budget(data, fmt, max_frames=0) == (1, width, height)
        return
    for limit in (1, frames - 1):
        result = animation_budget(data, fmt, max_frames=limit)
        assert result is not None and result[0] == limit + 1
    assert animation_budget(data, fmt, max_frames=frames) == (frames, width, height)


def test_a_million_tiny_gif_frames_stop_the_count_past_the_limit() -> None:
    data = tiny_frames_gif(1_000_000)
    assert animation_budget(data, "gif", max_frames=MAX_FRAMES) == (MAX_FRAMES + 1, 16, 16)


def test_gif_frames_are_counted_exactly_up_to_the_limit() -> None:
    data = tiny_frames_gif(1000)
    assert animation_budget(data, "gif", max_frames=1000) == (1000, 16, 16)
    assert animation_budget(data, "gif", max_frames=999) == (1000, 16, 16)


def test_gif_canvas_grows_to_cover_frames_outside_the_logical_screen() -> None:
    data = _gif_header((20, 10)) + _gif_frame(0, (3, 4)) + _gif_frame(1, (50, 7)) + b";"
    assert animation_budget(data, "gif", max_frames=MAX_FRAMES) == (2, 51, 10)
    with Image.open(io.BytesIO(data)) as image:
        for index in range(getattr(image, "n_frames", 1)):
            image.seek(index)
        assert image.size == (51, 10)


def test_gif_stray_bytes_between_blocks_are_skipped_as_pillow_does() -> None:
    data = _gif_header((8, 8)) + _gif_frame(0, (0, 0)) + b"\x00\x99" + _gif_frame(1, (1, 1)) + b";"
    assert animation_budget(data, "gif", max_frames=MAX_FRAMES) == (2, 8, 8)
    assert _pillow_budget(data) == (2, 8, 8)


def test_gif_without_an_image_has_no_answer() -> None:
    assert animation_budget(_gif_header((8, 8)) + b";", "gif", max_frames=MAX_FRAMES) is None


def test_apng_frames_come_from_actl() -> None:
    still = _save("PNG", _frames(1, (12, 8)))
    huge = _after_ihdr(still, _png_chunk(b"acTL", struct.pack(">II", 2**31, 0)))
    assert animation_budget(huge, "png", max_frames=MAX_FRAMES) == (MAX_FRAMES + 1, 12, 8)


@pytest.mark.parametrize(
    "chunks",
    [
        pytest.param([struct.pack(">II", 0, 0)], id="zero-frames"),
        pytest.param([struct.pack(">II", 2**31 + 1, 0)], id="past-2^31"),
        pytest.param([struct.pack(">II", 4, 0), struct.pack(">II", 4, 0)], id="two-actl"),
    ],
)
def test_an_invalid_actl_makes_a_still_png_as_in_pillow(chunks: list[bytes]) -> None:
    data = _after_ihdr(_save("PNG", _frames(1, (12, 8))), *(_png_chunk(b"acTL", c) for c in chunks))
    assert animation_budget(data, "png", max_frames=MAX_FRAMES) == (1, 12, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert _pillow_budget(data) == (1, 12, 8)


def test_an_actl_after_the_image_data_is_not_read() -> None:
    still = _save("PNG", _frames(1, (12, 8)))
    iend = still.rindex(b"IEND") - 4
    late = still[:iend] + _png_chunk(b"acTL", struct.pack(">II", 500, 0)) + still[iend:]
    assert animation_budget(late, "png", max_frames=MAX_FRAMES) == (1, 12, 8)


def test_avif_mdat_sized_to_the_end_of_the_file() -> None:
    _, data, expected = samples()["avif-still"]
    offset, _ = _top_level_boxes(data)[-1]
    assert data[offset + 4 : offset + 8] == b"mdat"
    to_end = data[:offset] + b"\x00\x00\x00\x00" + data[offset + 4 :]
    assert animation_budget(to_end, "avif", max_frames=MAX_FRAMES) == expected
    assert _pillow_budget(to_end) == expected


@pytest.mark.parametrize("name", ["avif-still", "avif-sequence"])
def test_avif_64_bit_box_sizes(name: str) -> None:
    _, data, expected = samples()[name]
    large = b"".join(
        struct.pack(">I4sQ", 1, data[pos + 4 : pos + 8], size + 8) + data[pos + 8 : pos + size]
        for pos, size in _top_level_boxes(data)
    )
    assert animation_budget(large, "avif", max_frames=MAX_FRAMES) == expected


def test_avif_sequence_frames_from_stts_without_stsz() -> None:
    _, data, expected = samples()["avif-sequence"]
    without_stsz = _retype_box(data, b"stsz", b"free")
    assert animation_budget(without_stsz, "avif", max_frames=MAX_FRAMES) == expected
    assert animation_budget(without_stsz, "avif", max_frames=2) == (3, 40, 30)


def test_avif_without_ispe_or_samples_has_no_answer() -> None:
    _, still, _ = samples()["avif-still"]
    assert animation_budget(_retype_box(still, b"ispe", b"free"), "avif", max_frames=9) is None
    _, sequence, _ = samples()["avif-sequence"]
    no_samples = _retype_box(_retype_box(sequence, b"stsz", b"free"), b"stts", b"free")
    assert animation_budget(no_samples, "avif", max_frames=9) is None


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x00" * 64, id="zeros"),
        pytest.param(b"\xff\xd8\xff\xe0" + b"\x00" * 60, id="jpeg-magic"),
    ],
)
def test_bytes_of_another_kind_are_a_container_error(fmt: str, data: bytes) -> None:
    with pytest.raises(ContainerError):
        animation_budget(data, fmt, max_frames=MAX_FRAMES)


def _truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(len(data))]


def _flip_bits(data: bytes, rng: random.Random) -> bytes:
    mutated = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        mutated[rng.randrange(len(mutated))] ^= 1 << rng.randrange(8)
    return bytes(mutated)


def _overwrite_word(data: bytes, rng: random.Random) -> bytes:
    """A length or size field, if it lands on one, set to an extreme."""
    pos = rng.randrange(max(1, len(data) - 4))
    word = rng.choice([b"\x00\x00\x00\x00", b"\x00\x00\x00\x01", b"\xff\xff\xff\xff"])
    return data[:pos] + word + data[pos + 4 :]


def _garbage_after_magic(data: bytes, rng: random.Random) -> bytes:
    keep = 12 if data[4:8] != b"ftyp" else 8
    return data[:keep] + rng.randbytes(rng.randrange(0, 400))


MUTATIONS: tuple[Callable[[bytes, random.Random], bytes], ...] = (
    _truncate,
    _flip_bits,
    _overwrite_word,
    _garbage_after_magic,
)


def test_hostile_bytes_give_an_answer_or_a_container_error() -> None:
    cases = [(fmt, data) for fmt, data, _ in samples().values()]
    rng = random.Random(20240611)
    outcomes = {"tuple": 0, "none": 0, "error": 0}
    for _ in range(600):
        fmt, data = rng.choice(cases)
        mutated = rng.choice(MUTATIONS)(data, rng)
        try:
            result = animation_budget(mutated, fmt, max_frames=MAX_FRAMES)
        except ContainerError:
            outcomes["error"] += 1
            continue
        if result is None:
            outcomes["none"] += 1
            continue
        frames, width, height = result
        assert 1 <= frames <= MAX_FRAMES + 1 and width >= 0 and height >= 0
        outcomes["tuple"] += 1
    assert all(outcomes.values()), outcomes
