"""Decoding untrusted image bytes into an RGB Pillow image, with limits.

Two stages, so the caller can route big images before paying for their pixels:

- ``probe_image`` reads the header only: empty body, byte limit, a recognised
  and allowed format, the pixel limit (width x height before any pixel is
  decoded: decompression bombs never get decoded).
- ``load_image`` decodes (failing on truncated data: ``LOAD_TRUNCATED_IMAGES``
  stays False), applies the EXIF orientation and converts 16-bit, CMYK, palette,
  RGBA/LA and grayscale images to 8-bit RGB (alpha is dropped, as the
  timm/torchvision ImageNet loader does with ``convert("RGB")``). With
  ``reduce_to``, a JPEG much larger than needed is decoded at 1/2, 1/4 or 1/8
  scale by the codec itself (DCT scaling), never below ``reduce_to`` (for
  camera-size images: ``DECODE_SLACK`` of it, the resize then enlarging by at
  most 1/0.85).

The bytes come from clients, so *any* exception Pillow raises on them (it raises
``TypeError``, ``SyntaxError``, ``struct.error``... on crafted files) is a bad
image: a 400 that names the stage, never a 500.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from care_serve.errors import CareServeError, InvalidInput, PayloadTooLarge
from care_serve.settings import register_image_plugins

__all__ = [
    "DECODE_SLACK",
    "DecodedImage",
    "ImageProbe",
    "configure_pillow",
    "decode_image",
    "decoded_pixels",
    "load_image",
    "probe_image",
    "to_rgb",
]

ImageFile.LOAD_TRUNCATED_IMAGES = False
ORIENTATION_TAG = 0x0112
_TRANSPOSED_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height
_MAX_DETAIL = 160  # characters of a decoder's own message shown to the client
T = TypeVar("T")


def configure_pillow(max_image_pixels: int) -> None:
    """Register the optional decoders (HEIF/HEIC) and set Pillow's own decompression-bomb
    guard (a second line behind ``probe_image``)."""
    register_image_plugins()
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    Image.MAX_IMAGE_PIXELS = max_image_pixels
    # probe_image enforces the exact limit itself; Pillow's warnings would only be noise.
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\..*")


@dataclass(frozen=True)
class ImageProbe:
    """An image whose header was read and checked; no pixel decoded yet."""

    image: Image.Image
    format: str
    mode: str
    width: int  # as displayed (after EXIF orientation)
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


@dataclass(frozen=True)
class DecodedImage:
    """An RGB image plus what the client sent.

    ``width`` and ``height`` are the size the client sent (after EXIF orientation);
    ``image`` is that size, or smaller when it was decoded at reduced scale.
    """

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


def _orientation(image: Image.Image) -> int:
    value = image.getexif().get(ORIENTATION_TAG, 1)
    return value if isinstance(value, int) else 1


def _apply_orientation(image: Image.Image) -> Image.Image:
    """The image as displayed: EXIF orientation applied (no copy when there is none)."""
    if _orientation(image) in (0, 1):
        return image
    return ImageOps.exif_transpose(image) or image


def _detail(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 3] + "..."


def _guarded(what: str, step: Callable[[], T]) -> T:
    """Run one decoding step; whatever the decoder raises becomes a client error."""
    try:
        return step()
    except CareServeError:
        raise
    except Image.DecompressionBombError:
        raise PayloadTooLarge(
            f"{what}: the image has more pixels than allowed (max_image_pixels)"
        ) from None
    except MemoryError:
        raise PayloadTooLarge(f"{what}: the image needs more memory than is available") from None
    except Exception as exc:  # untrusted bytes: every decoder failure is the file's fault
        raise InvalidInput(f"{what} ({type(exc).__name__}: {_detail(exc)})") from None


def probe_image(
    data: bytes,
    *,
    max_bytes: int,
    max_pixels: int,
    allowed_formats: Sequence[str] | None = None,
) -> ImageProbe:
    """Check ``data``'s size, format and header; ``InvalidInput`` / ``PayloadTooLarge``."""
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
        seen = _format_of(data) if formats else None
        if seen is not None:
            raise InvalidInput(
                f"{seen} images are not accepted here (accepted: {accepted}; allowed_image_formats)"
            ) from None
        raise InvalidInput(
            f"the data is not an image in an accepted format (accepted: {accepted})"
        ) from None
    except Image.DecompressionBombError:
        raise PayloadTooLarge(
            f"image has more than {max_pixels} pixels (max_image_pixels)"
        ) from None
    except Exception as exc:
        raise InvalidInput(
            f"cannot read the image header ({type(exc).__name__}: {_detail(exc)})"
        ) from None
    width, height = image.size
    if width <= 0 or height <= 0:
        raise InvalidInput(f"image has an empty size ({width}x{height})")
    if width * height > max_pixels:
        raise PayloadTooLarge(
            f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels} "
            "pixels (max_image_pixels)"
        )
    fmt = image.format or "unknown"
    orientation = _guarded(
        f"cannot read the EXIF data of the {fmt} image", lambda: _orientation(image)
    )
    if orientation in _TRANSPOSED_ORIENTATIONS:
        width, height = height, width
    return ImageProbe(image=image, format=fmt, mode=image.mode, width=width, height=height)


def _format_of(data: bytes) -> str | None:
    """The format Pillow recognises ``data`` as, allowed or not (header only; None if none)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.format
    except Exception:  # untrusted bytes: any failure means "not recognised"
        return None


#: How far below the size the resize needs a reduced-scale decode may go, when that reaches a
#: scale of 1/4 or 1/8 (a camera-size image, at least ~3.4x the needed size; ordinary photos
#: keep a decode at least the needed size). A 1920x1080 frame for a 512-wide letterbox
#: (512x288) then decodes at 1/4 (480x270, enlarged 1.07x) rather than 1/2 (960x540, shrunk
#: 1.9x): a quarter of the pixels to decode and resize. The camera-size benchmark measures
#: what it changes (``benchmarks.model.camera_sizes``).
DECODE_SLACK = 0.85


def _jpeg_scale(size: tuple[int, int], want: tuple[int, int]) -> int:
    """Pillow's ``draft`` rule: the largest of 8, 4, 2, 1 that keeps ``size`` >= ``want``."""
    fit = min(size[0] // max(1, want[0]), size[1] // max(1, want[1]))
    return next((scale for scale in (8, 4, 2) if fit >= scale), 1)


def _codec_size(probe: ImageProbe, reduce_to: tuple[int, int] | None) -> tuple[int, int] | None:
    """The size to ask the JPEG codec for, in the file's own orientation: at least
    ``reduce_to`` (``DECODE_SLACK`` of it where that gives 1/4 or 1/8); None when the
    image decodes whole (no ``reduce_to``, or a format or mode without DCT scaling)."""
    image = probe.image
    if reduce_to is None or image.format != "JPEG":
        return None
    if image.mode not in ("RGB", "L", "CMYK", "YCbCr"):
        return None
    want_w, want_h = reduce_to
    if (probe.width, probe.height) != image.size:  # EXIF-transposed
        want_w, want_h = want_h, want_w
    slack = (max(1, int(DECODE_SLACK * want_w)), max(1, int(DECODE_SLACK * want_h)))
    if _jpeg_scale(image.size, slack) >= 4:
        return slack
    return max(1, want_w), max(1, want_h)


def decoded_pixels(probe: ImageProbe, reduce_to: tuple[int, int] | None) -> int:
    """How many pixels ``load_image(probe, reduce_to=...)`` holds while it decodes.

    A baseline JPEG decoded at reduced scale streams through the codec row by row, so
    it holds only the reduced image; a progressive JPEG keeps every DCT coefficient of
    the full image until its last scan, so it counts at full size, as does every other
    format and every full-resolution decode.
    """
    image = probe.image
    target = _codec_size(probe, reduce_to)
    if target is None or image.info.get("progressive"):
        return probe.pixels
    scale = _jpeg_scale(image.size, target)
    return -(-image.size[0] // scale) * -(-image.size[1] // scale)


def load_image(probe: ImageProbe, *, reduce_to: tuple[int, int] | None = None) -> DecodedImage:
    """Decode a probed image to RGB (``reduce_to``: the smallest displayed size needed)."""
    image, fmt = probe.image, probe.format
    target = _codec_size(probe, reduce_to)
    if target is not None:
        _guarded(f"cannot decode the {fmt} image", lambda: image.draft(image.mode, target))
    _guarded(f"the {fmt} image is truncated or corrupt and cannot be decoded", lambda: image.load())
    rgb = _guarded(
        f"cannot convert the {fmt} image (mode {probe.mode}) to RGB; send an RGB, grayscale, "
        "palette, CMYK or 16-bit image",
        lambda: to_rgb(_apply_orientation(image)),
    )
    return DecodedImage(
        image=rgb, format=fmt, original_mode=probe.mode, width=probe.width, height=probe.height
    )


def decode_image(
    data: bytes,
    *,
    max_bytes: int,
    max_pixels: int,
    allowed_formats: Sequence[str] | None = None,
    reduce_to: tuple[int, int] | None = None,
) -> DecodedImage:
    """``probe_image`` then ``load_image``: ``data`` as RGB, or ``InvalidInput``."""
    probe = probe_image(
        data, max_bytes=max_bytes, max_pixels=max_pixels, allowed_formats=allowed_formats
    )
    return load_image(probe, reduce_to=reduce_to)
