"""Decoding untrusted image bytes into an RGB Pillow image, with limits.

Checks, in order: empty body, byte limit, a recognised and allowed format
(header only), the pixel limit (width x height from the header, before any
pixel is decoded: decompression bombs never get decoded), then a full decode
that fails on truncated data (``ImageFile.LOAD_TRUNCATED_IMAGES`` stays False).
EXIF orientation is applied; 16-bit, CMYK, palette, RGBA/LA and grayscale
images are converted to 8-bit RGB (alpha is dropped, as the timm/torchvision
ImageNet loader does with ``convert("RGB")``).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from service.errors import InvalidInput, PayloadTooLarge

__all__ = ["DecodedImage", "configure_pillow", "decode_image", "to_rgb"]

ImageFile.LOAD_TRUNCATED_IMAGES = False


def configure_pillow(max_image_pixels: int) -> None:
    """Set Pillow's own decompression-bomb guard (a second line behind ``decode_image``)."""
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    Image.MAX_IMAGE_PIXELS = max_image_pixels
    # decode_image enforces the exact limit itself; Pillow's warning would only be noise.
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


@dataclass(frozen=True)
class DecodedImage:
    """An RGB image plus what the client sent."""

    image: Image.Image
    format: str
    original_mode: str
    width: int
    height: int


def _sixteen_bit_to_l(image: Image.Image) -> Image.Image:
    """Scale a 16/32-bit integer or float grayscale image to 8-bit ``L``."""
    arr = np.asarray(image)
    if image.mode == "F":
        scaled = np.clip(arr, 0.0, 255.0)
    else:
        # I;16* hold 0..65535; PNG 16-bit grayscale loads as I. Map 65535 -> 255.
        scaled = np.clip(arr.astype(np.float64) / 257.0, 0.0, 255.0)
    return Image.fromarray(np.round(scaled).astype(np.uint8), mode="L")


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        image = _sixteen_bit_to_l(image)
    return image.convert("RGB")


ORIENTATION_TAG = 0x0112


def _apply_orientation(image: Image.Image) -> Image.Image:
    """The image as displayed: EXIF orientation applied (no copy when there is none)."""
    if image.getexif().get(ORIENTATION_TAG, 1) in (0, 1):
        return image
    return ImageOps.exif_transpose(image) or image


def _too_many_pixels(max_pixels: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"image has more than {max_pixels} pixels (max_image_pixels)")


def decode_image(
    data: bytes,
    *,
    max_bytes: int,
    max_pixels: int,
    allowed_formats: Sequence[str] | None = None,
) -> DecodedImage:
    """Decode ``data`` into an RGB image or raise ``InvalidInput`` / ``PayloadTooLarge``."""
    if not data:
        raise InvalidInput(
            "empty request: send the image bytes as the request body or as the multipart "
            "field 'file'"
        )
    if len(data) > max_bytes:
        raise PayloadTooLarge(
            f"image is {len(data)} bytes; the limit is {max_bytes} bytes (max_image_bytes)"
        )
    formats = list(allowed_formats) if allowed_formats else None
    try:
        image = Image.open(io.BytesIO(data), formats=formats)
    except UnidentifiedImageError:
        accepted = ", ".join(formats) if formats else "any format Pillow reads"
        raise InvalidInput(
            f"the data is not an image in an accepted format (accepted: {accepted})"
        ) from None
    except Image.DecompressionBombError:
        raise PayloadTooLarge(
            f"image has more than {max_pixels} pixels (max_image_pixels)"
        ) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise InvalidInput(f"cannot read the image header: {exc}") from None
    width, height = image.size
    if width <= 0 or height <= 0:
        raise InvalidInput(f"image has an empty size ({width}x{height})")
    if width * height > max_pixels:
        raise PayloadTooLarge(
            f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels} "
            "pixels (max_image_pixels)"
        )
    fmt = image.format or "unknown"
    mode = image.mode
    try:
        image.load()
    except Image.DecompressionBombError:
        raise PayloadTooLarge(
            f"image has more than {max_pixels} pixels (max_image_pixels)"
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise InvalidInput(
            f"the {fmt} image is truncated or corrupt and cannot be decoded ({exc})"
        ) from None
    try:
        oriented = _apply_orientation(image)
        rgb = to_rgb(oriented)
    except (OSError, ValueError) as exc:
        raise InvalidInput(
            f"cannot convert the {fmt} image (mode {mode}) to RGB ({exc}); send an RGB, "
            "grayscale, palette, CMYK or 16-bit image"
        ) from None
    # The size after EXIF orientation: the frame that dense results (boxes, masks) are in.
    return DecodedImage(
        image=rgb, format=fmt, original_mode=mode, width=rgb.width, height=rgb.height
    )
