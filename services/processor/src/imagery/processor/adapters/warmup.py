"""Imported once by the job host (see `jobhost.PRELOAD`): verifies and renders a
tiny image of each accepted type, made here, so the lazy first-use work of Pillow, libjpeg,
libwebp, libavif, libheif, zlib and LittleCMS (format registration, encoder set-up, colour
transforms) is done before the fork and inherited by every job process instead of repeated in
each (`make bench` shows what it saves).

Nothing here touches an upload. A failure only costs the saving: it is reported on stderr
(the processor's log) and jobs initialise themselves as before."""

from __future__ import annotations

import io
import sys

from PIL import Image, ImageCms

from imagery.common.presets import DEFAULT_PRESETS
from imagery.processor.adapters.render import verify_and_render
from imagery.processor.imaging import Limits, RenderSpec


def samples() -> list[tuple[bytes, str]]:
    """One tiny image per accepted format: an opaque JPEG with an ICC profile (the colour-managed
    path), a PNG with alpha (the PNG fallback), a WebP, an AVIF, a GIF with a transparent
    colour and a HEIC (libheif and libde265 set up before the fork): between them every
    decoder, encoder and conversion a job uses."""
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    opaque = Image.new("RGB", (64, 48), (200, 120, 40))
    made = []
    for image, fmt, options in (
        (opaque, "JPEG", {"icc_profile": icc}),
        (Image.new("RGBA", (48, 64), (40, 120, 200, 128)), "PNG", {}),
        (opaque, "WEBP", {}),
        (opaque, "AVIF", {}),
        (opaque.convert("P"), "GIF", {"transparency": 0}),
        (opaque, "HEIF", {}),
    ):
        buffer = io.BytesIO()
        image.save(buffer, fmt, **options)
        made.append((buffer.getvalue(), f"image/{'heic' if fmt == 'HEIF' else fmt.lower()}"))
    return made


def warm_up(spec: RenderSpec | None = None) -> int:
    """Render the samples; returns how many variants were made."""
    made = 0
    for data, content_type in samples():
        made += len(
            verify_and_render(
                data,
                content_type,
                Limits(),
                spec or RenderSpec(presets=DEFAULT_PRESETS, avif=True),  # AVIF too, if enabled
            ).variants
        )
    return made


try:
    warm_up()
except Exception as exc:  # noqa: BLE001 - a warm-up must never stop the forkserver
    print(f"imagery processor: job warm-up failed, jobs will start cold: {exc!r}", file=sys.stderr)
