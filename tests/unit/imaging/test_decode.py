"""Image decoding limits, conversions, EXIF, and the exact eval preprocessing."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from care_serve.errors import InvalidInput, PayloadTooLarge
from care_serve.imaging.decode import decode_image, decoded_pixels, load_image, probe_image
from care_serve.imaging.preprocess import preprocess_image
from care_serve.store import InputSpec, Preprocessing
from tests.helpers.packages import jpeg_bytes, make_manifest, png_bytes

LIMITS = {"max_bytes": 1_000_000, "max_pixels": 1_000_000}


def _save(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def test_rejects_empty_garbage_truncated() -> None:
    with pytest.raises(InvalidInput, match="empty"):
        decode_image(b"", **LIMITS)
    with pytest.raises(InvalidInput, match="not an image"):
        decode_image(b"hello, world" * 10, **LIMITS)
    data = jpeg_bytes(200, 150)
    with pytest.raises(InvalidInput, match="truncated"):
        decode_image(data[: len(data) // 2], **LIMITS)


def test_byte_and_pixel_limits() -> None:
    data = jpeg_bytes(64, 64)
    with pytest.raises(PayloadTooLarge, match="bytes"):
        decode_image(data, max_bytes=len(data) - 1, max_pixels=10**6)
    bomb = _save(Image.new("1", (5000, 4000)), "PNG")  # 20 Mpx in a few kB
    assert len(bomb) < 50_000
    with pytest.raises(PayloadTooLarge, match="pixels"):
        decode_image(bomb, **LIMITS)


def test_format_allow_list() -> None:
    data = _save(Image.new("RGB", (8, 8)), "BMP")
    with pytest.raises(InvalidInput, match="accepted: PNG"):
        decode_image(data, allowed_formats=["PNG"], **LIMITS)


def test_a_format_not_allowed_is_named() -> None:
    data = _save(Image.new("RGB", (8, 8)), "GIF")
    with pytest.raises(InvalidInput) as info:
        decode_image(data, allowed_formats=["JPEG", "PNG"], **LIMITS)
    assert info.value.message == (
        "GIF images are not accepted here (accepted: JPEG, PNG; allowed_image_formats)"
    )
    with pytest.raises(InvalidInput, match="not an image in an accepted format"):
        decode_image(b"hello, world" * 10, allowed_formats=["JPEG", "PNG"], **LIMITS)


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [("L", "PNG"), ("LA", "PNG"), ("RGBA", "PNG"), ("P", "PNG"), ("CMYK", "JPEG"), ("1", "PNG")],
)
def test_modes_convert_to_rgb(mode: str, fmt: str) -> None:
    img = Image.new("RGB", (40, 30), (200, 100, 50)).convert(mode)
    decoded = decode_image(_save(img, fmt), **LIMITS)
    assert decoded.image.mode == "RGB" and decoded.image.size == (40, 30)
    assert decoded.original_mode == mode


def test_sixteen_bit_is_scaled_not_clipped() -> None:
    arr = np.full((10, 12), 65535 // 2, dtype=np.uint16)
    arr[0, 0] = 65535
    data = png_bytes(Image.fromarray(arr))
    rgb = np.asarray(decode_image(data, **LIMITS).image)
    assert rgb[0, 0].tolist() == [255, 255, 255]
    assert rgb[5, 5].tolist() == [127, 127, 127]  # clipping would give 255


def test_exif_orientation_is_applied() -> None:
    img = Image.new("RGB", (60, 20), (0, 0, 0))
    img.paste((255, 0, 0), (0, 0, 10, 20))  # red on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    decoded = decode_image(_save(img, "JPEG", exif=exif, quality=95), **LIMITS)
    assert decoded.image.size == (20, 60)
    top = np.asarray(decoded.image)[:5].mean(axis=(0, 1))
    assert top[0] > 150 and top[1] < 80  # the red band is now at the top


def _reference_eval_transform(img: Image.Image, size: int, short: int) -> torch.Tensor:
    """torchvision's Resize(short, bicubic) + CenterCrop + ToTensor + Normalize, spelled out."""
    w, h = img.size
    if w <= h:
        new_w, new_h = short, int(short * h / w)
    else:
        new_w, new_h = int(short * w / h), short
    resized = img.resize((new_w, new_h), Image.Resampling.BICUBIC)
    top = round((new_h - size) / 2.0)
    left = round((new_w - size) / 2.0)
    t = torch.from_numpy(np.array(resized)).permute(2, 0, 1).contiguous()
    t = t[:, top : top + size, left : left + size].float().div(255)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    return (t - mean) / std


@pytest.mark.parametrize("wh", [(300, 200), (200, 301), (257, 257), (97, 431)])
def test_center_crop_matches_the_eval_transform_exactly(wh: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(wh))
    img = Image.fromarray(rng.integers(0, 256, (wh[1], wh[0], 3), dtype=np.uint8))
    manifest = make_manifest(input=InputSpec(height=224, width=224))
    assert manifest.resize_short_side == 256
    array, meta = preprocess_image(img, manifest)
    ref = _reference_eval_transform(img, 224, 256).numpy()
    assert array.dtype == np.float32 and array.shape == (3, 224, 224)
    assert np.array_equal(array, ref)
    assert meta.orig_width == wh[0] and meta.input_width == 224


@pytest.mark.parametrize("wh", [(640, 480), (480, 640), (1000, 751), (1920, 1080), (300, 300)])
def test_crop_only_resizes_what_the_crop_keeps_within_one_step(wh: tuple[int, int]) -> None:
    """The fast centre crop: the same geometry, pixel values at most 1/255 apart, rarely."""
    rng = np.random.default_rng(wh[0] * 7 + wh[1])
    img = Image.fromarray(rng.integers(0, 256, (wh[1], wh[0], 3), dtype=np.uint8))
    manifest = make_manifest(input=InputSpec(height=224, width=224))
    exact, meta = preprocess_image(img, manifest)
    fast, fast_meta = preprocess_image(img, manifest, crop_only=True)
    assert fast_meta == meta and fast.shape == exact.shape
    steps = np.abs(fast - exact) * np.asarray([0.229, 0.224, 0.225])[:, None, None] * 255
    assert steps.max() <= 1.0 + 1e-4
    assert (steps > 0.5).mean() < 0.005


@pytest.mark.parametrize("wh", [(200, 301), (97, 431)])
def test_crop_only_keeps_the_exact_path_when_the_resize_enlarges(wh: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(wh))
    img = Image.fromarray(rng.integers(0, 256, (wh[1], wh[0], 3), dtype=np.uint8))
    manifest = make_manifest(input=InputSpec(height=224, width=224))
    fast, _ = preprocess_image(img, manifest, crop_only=True)
    assert np.array_equal(fast, _reference_eval_transform(img, 224, 256).numpy())


def test_letterbox_meta_maps_back() -> None:
    img = Image.new("RGB", (200, 100), (255, 255, 255))
    manifest = make_manifest(
        preprocessing=Preprocessing(mode="letterbox"), input=InputSpec(height=64, width=64)
    )
    array, meta = preprocess_image(img, manifest)
    assert array.shape == (3, 64, 64)
    assert (meta.scale_x, meta.offset_x, meta.offset_y) == (0.32, 0.0, 16.0)
    x, y = meta.to_original(np.array([0.0, 64.0]), np.array([16.0, 48.0]))
    assert np.allclose(x, [0, 200]) and np.allclose(y, [0, 100])


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_an_image_smaller_than_its_resize_decodes_whole(fmt: str) -> None:
    data = _save(Image.new("RGB", (200, 150), (10, 20, 30)), fmt)
    decoded = decode_image(data, max_bytes=10**6, max_pixels=10**6, reduce_to=(512, 288))
    assert decoded.image.size == (200, 150)


def test_decoded_pixels_counts_what_the_decode_holds() -> None:
    picture = Image.fromarray(
        np.random.default_rng(1).integers(0, 256, (750, 1000, 3), dtype=np.uint8)
    )
    limits = {"max_bytes": 10**8, "max_pixels": 10**8}
    baseline = probe_image(_save(picture, "JPEG", quality=85), **limits)
    assert decoded_pixels(baseline, (120, 90)) == 125 * 94  # 1/8, rounded up as libjpeg does
    assert load_image(baseline, reduce_to=(120, 90)).image.size == (125, 94)
    assert decoded_pixels(probe_image(_save(picture, "JPEG"), **limits), None) == 750_000
    progressive = probe_image(_save(picture, "JPEG", progressive=True), **limits)
    assert decoded_pixels(progressive, (120, 90)) == 750_000  # every coefficient is kept
    assert decoded_pixels(probe_image(_save(picture, "PNG"), **limits), (120, 90)) == 750_000
