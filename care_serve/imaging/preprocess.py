"""Image geometry and normalisation shared by all tasks (Pillow + numpy, no torchvision).

``center_crop`` reproduces the timm/torchvision ImageNet eval transform:
``Resize(short_side, bicubic)`` (long side ``int(short * long / short_orig)``),
``CenterCrop`` (offsets ``int(round((size - crop) / 2))``), ``ToTensor`` (/255),
``Normalize(mean, std)``, all in float32, bit for bit. ``normalize`` looks the
float32 values up in a table (identical to computing them, several times faster).
The exact path resizes the whole image before cropping. The fast path
(``crop_only``) resizes only the pixels the crop keeps (Pillow's ``box``), which
samples at the same positions with the same filter: on downscaling it differs
from resize-then-crop by at most one 8-bit step on about one value in 1,000
(float rounding of the filter's window). When the resize enlarges an axis the
box changes more (measured up to 23 steps), so that case keeps the full resize.

The geometry (resized size, crop, padding, ``PreprocessMeta``) is always that of
the image the client sent (``size``), even when the pixels come from a smaller,
reduced-scale decode: the fast path changes pixel values slightly, never where
they land. ``reducing_gap`` (``FAST_REDUCING_GAP`` on the fast path) lets Pillow
shrink by a whole factor with a box filter before the final resample.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

from care_serve.imaging.letterbox import REDUCING_GAP
from care_serve.store.manifest import Manifest

__all__ = [
    "FAST_REDUCING_GAP",
    "RESAMPLING",
    "PreprocessMeta",
    "normalize",
    "preprocess_image",
    "resized_size",
]

#: The fast path's ``reducing_gap``: box-shrink by whole factors while the image stays at
#: least 3x the target, then resample (what the dense tasks' training pipeline does; Pillow
#: documents 3.0 as indistinguishable from a full resample in most cases).
FAST_REDUCING_GAP = REDUCING_GAP

RESAMPLING: dict[str, Image.Resampling] = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


@dataclass(frozen=True)
class PreprocessMeta:
    """How network-input pixels map to original-image pixels.

    ``x_input = x_orig * scale_x + offset_x`` (same for y), so
    ``x_orig = (x_input - offset_x) / scale_x``. Letterbox padding gives positive
    offsets; a centre crop gives negative ones.
    """

    orig_width: int
    orig_height: int
    input_width: int
    input_height: int
    scale_x: float
    scale_y: float
    offset_x: float
    offset_y: float

    def to_original(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map input-space coordinates back to the original image."""
        return (x - self.offset_x) / self.scale_x, (y - self.offset_y) / self.scale_y


@lru_cache(maxsize=32)
def _normalize_table(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """``(3, 256)`` float32: ``(v / 255 - mean[c]) / std[c]`` for every 8-bit value ``v``."""
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"mean and std need 3 values (RGB), got {len(mean)} and {len(std)}")
    scaled = np.arange(256, dtype=np.float32) / np.float32(255.0)
    mean_f = np.asarray(mean, dtype=np.float32)[:, None]
    std_f = np.asarray(std, dtype=np.float32)[:, None]
    table: np.ndarray = (scaled[None, :] - mean_f) / std_f
    table.setflags(write=False)
    return table


def normalize(image: Image.Image, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """RGB image -> ``(3, H, W)`` float32: ``(pixel / 255 - mean) / std``."""
    table = _normalize_table(tuple(mean), tuple(std))
    # Contiguous planes first: np.take reads them about 3x faster than strided channels.
    planes = np.ascontiguousarray(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1))
    out = np.empty(planes.shape, dtype=np.float32)
    for channel in range(3):
        np.take(table[channel], planes[channel], out=out[channel])
    return out


def _short_side_size(width: int, height: int, short: int) -> tuple[int, int]:
    """The size after resizing the short side to ``short`` (torchvision's rounding)."""
    if width <= height:
        return short, int(short * height / width)
    return int(short * width / height), short


def resized_size(width: int, height: int, manifest: Manifest) -> tuple[int, int]:
    """The size a ``width x height`` image is resized to before cropping or padding."""
    out_h, out_w = manifest.input.height, manifest.input.width
    mode = manifest.preprocessing.mode
    if mode == "center_crop":
        return _short_side_size(width, height, manifest.resize_short_side)
    if mode == "resize":
        return out_w, out_h
    scale = min(out_w / width, out_h / height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def preprocess_image(
    image: Image.Image,
    manifest: Manifest,
    *,
    size: tuple[int, int] | None = None,
    reducing_gap: float | None = None,
    crop_only: bool = False,
) -> tuple[np.ndarray, PreprocessMeta]:
    """Apply the manifest's preprocessing to an RGB image.

    ``size`` is the ``(width, height)`` the client sent (default: ``image``'s own);
    ``image`` may be smaller (a reduced-scale decode). ``PreprocessMeta`` maps to
    the pixels of ``size``. Without ``reducing_gap`` and ``crop_only`` the result is
    the offline transform of a full-resolution image, bit for bit; ``crop_only``
    resizes only what a centre crop keeps (see the module docstring).
    """
    pre = manifest.preprocessing
    out_h, out_w = manifest.input.height, manifest.input.width
    resample = RESAMPLING[pre.interpolation]
    w, h = size if size is not None else image.size

    def resize(target: tuple[int, int]) -> Image.Image:
        if image.size == target:
            return image
        return image.resize(target, resample, reducing_gap=reducing_gap)

    if pre.mode == "center_crop":
        rw, rh = _short_side_size(w, h, manifest.resize_short_side)
        top = round((rh - out_h) / 2.0)
        left = round((rw - out_w) / 2.0)
        iw, ih = image.size
        if crop_only and iw >= rw and ih >= rh:
            sx, sy = iw / rw, ih / rh
            box = (left * sx, top * sy, (left + out_w) * sx, (top + out_h) * sy)
            canvas = image.resize((out_w, out_h), resample, box=box, reducing_gap=reducing_gap)
        else:
            canvas = resize((rw, rh)).crop((left, top, left + out_w, top + out_h))
        meta = PreprocessMeta(w, h, out_w, out_h, rw / w, rh / h, -left, -top)
    elif pre.mode == "resize":
        canvas = resize((out_w, out_h))
        meta = PreprocessMeta(w, h, out_w, out_h, out_w / w, out_h / h, 0.0, 0.0)
    else:  # letterbox
        scale = min(out_w / w, out_h / h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        resized = resize((nw, nh))
        left, top = (out_w - nw) // 2, (out_h - nh) // 2
        meta = PreprocessMeta(w, h, out_w, out_h, nw / w, nh / h, float(left), float(top))
        # The padding's normalised value, then the image: what normalising the pasted
        # canvas gives, without normalising the padding pixel by pixel.
        table = _normalize_table(tuple(pre.mean), tuple(pre.std))
        out = np.empty((3, out_h, out_w), dtype=np.float32)
        out[:] = table[:, pre.pad_value, None, None]
        out[:, top : top + nh, left : left + nw] = normalize(resized, pre.mean, pre.std)
        return out, meta
    return normalize(canvas, pre.mean, pre.std), meta
