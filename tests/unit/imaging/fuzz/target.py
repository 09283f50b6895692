"""The decoding property every fuzzer checks, and the seed files it mutates.

Property: for any bytes, the serving decode path either returns an RGB image of
a positive size or raises ``InvalidInput`` (``PayloadTooLarge`` included), the
errors the transports turn into a 4xx. Anything else would be a 500.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from care_serve.errors import InvalidInput
from care_serve.imaging.decode import configure_pillow, decode_image
from tests.helpers.paths import MALFORMED

__all__ = ["LIMITS", "REGRESSIONS", "check_decode", "seed_files"]

LIMITS = {"max_bytes": 2_000_000, "max_pixels": 4_000_000}
FORMATS = ["JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF"]
REGRESSIONS = MALFORMED


def check_decode(data: bytes, reduce_to: tuple[int, int] | None = None) -> None:
    """Assert the property on ``data`` (an ``AssertionError`` or other exception is a bug)."""
    try:
        decoded = decode_image(data, allowed_formats=FORMATS, reduce_to=reduce_to, **LIMITS)
    except InvalidInput as exc:
        assert exc.status_code in (400, 413), exc
        assert exc.message, "an error must say what was wrong"
        return
    assert decoded.image.mode == "RGB"
    assert decoded.width > 0 and decoded.height > 0


def _save(image: Image.Image, fmt: str, **options: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


def seed_files() -> list[bytes]:
    """Small valid files of every accepted format and the modes they carry, plus regressions."""
    configure_pillow(LIMITS["max_pixels"])
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    seeds = [
        _save(rgb, "JPEG", quality=80),
        _save(rgb, "JPEG", quality=80, exif=exif.tobytes()),
        _save(rgb.convert("CMYK"), "JPEG"),
        _save(rgb, "PNG"),
        _save(rgb.convert("RGBA"), "PNG"),
        _save(rgb.convert("P"), "PNG"),
        _save(Image.fromarray(rng.integers(0, 65535, (16, 16), dtype=np.uint16)), "PNG"),
        _save(rgb, "WEBP", quality=70),
        _save(rgb, "BMP"),
        _save(rgb.convert("P"), "GIF"),
        _save(rgb, "TIFF"),
        _save(rgb, "TIFF", compression="tiff_lzw"),
        _save(rgb.convert("L"), "TIFF", compression="tiff_deflate", exif=exif.tobytes()),
    ]
    seeds += [p.read_bytes() for p in sorted(REGRESSIONS.iterdir()) if p.is_file()]
    return seeds
