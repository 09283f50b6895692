"""Segmentation post-processing: exact mask mapping to the original size, shares, PNGs."""

from __future__ import annotations

import numpy as np
import pytest

from care_serve.imaging.letterbox import LetterboxMeta, letterbox_mask, make_letterbox_meta
from care_serve.postprocess.segmentation import (
    class_shares,
    colorize,
    logits_to_mask,
    make_palette,
    mask_to_png,
    overlay,
    overlay_png,
    png_to_mask,
    postprocess_segmentation,
)

# Tiny tensors: one torch thread (see the fixture in tests/conftest.py).
pytestmark = pytest.mark.usefixtures("single_thread_torch")

SIZES = [
    (37, 291, 320, 320),
    (291, 37, 320, 320),
    (128, 256, 256, 320),
    (256, 128, 320, 256),
    (640, 480, 320, 256),
    (150, 299, 256, 256),
    (1023, 517, 320, 192),
]


def _cell_centres_in_original(meta: LetterboxMeta, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Original-image x and y coordinates of the logit cells' centres."""
    xs = ((np.arange(meta.input_width // stride) + 0.5) * stride - meta.pad_left) / meta.scale_x
    ys = ((np.arange(meta.input_height // stride) + 0.5) * stride - meta.pad_top) / meta.scale_y
    return xs, ys


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("stride", [1, 4])
@pytest.mark.parametrize("axis", ["x", "y"])
def test_mask_boundaries_land_on_exact_original_pixels(
    size: tuple[int, int, int, int], stride: int, axis: str
) -> None:
    """Logits linear in original coordinates: the class edge is at a known sub-pixel spot.

    Bilinear interpolation reproduces a linear function exactly, so with
    ``exact=True`` every original pixel whose centre lies beyond the threshold
    must be class 1; the threshold sits 0.2 px from a pixel centre, so a
    mapping error of a fifth of a pixel would flip a whole row or column. The
    default (fast) mode may move the edge by less than one network-input pixel.
    """
    meta = make_letterbox_meta(*size)
    xs, ys = _cell_centres_in_original(meta, stride)
    extent = meta.orig_width if axis == "x" else meta.orig_height
    input_pixel = 1.0 / (meta.scale_x if axis == "x" else meta.scale_y)  # in original pixels
    rng = np.random.default_rng(sum(size) + stride)
    for _ in range(3):
        t = int(rng.integers(extent // 3, 2 * extent // 3 + 1)) + 0.5 + 0.2  # near a centre
        coord = xs[None, :] if axis == "x" else ys[:, None]
        plane = np.broadcast_to(coord - t, (len(ys), len(xs)))
        logits = np.stack([np.zeros_like(plane), plane]).astype(np.float32)
        centres = np.arange(extent) + 0.5
        expected_line = (centres > t).astype(np.uint8)
        near_edge = np.abs(centres - t) < input_pixel
        for exact in (True, False):
            mask = logits_to_mask(logits, meta, stride=stride, exact=exact)
            assert mask.shape == (meta.orig_height, meta.orig_width) and mask.dtype == np.uint8
            line = mask[0] if axis == "x" else mask[:, 0]
            # Constant across the other axis.
            assert np.all(mask == (line[None, :] if axis == "x" else line[:, None]))
            if exact:
                np.testing.assert_array_equal(line, expected_line)
            else:
                np.testing.assert_array_equal(line[~near_edge], expected_line[~near_edge])
                assert np.all(np.diff(line.astype(int)) >= 0)  # one clean edge


@pytest.mark.parametrize("scale", [1, 2, 4])
@pytest.mark.parametrize("image_size", [(40, 20), (24, 48), (31, 17)])
def test_masks_round_trip_through_the_input_frame(scale: int, image_size: tuple[int, int]) -> None:
    """Original mask -> network frame (nearest) -> one-hot logits -> back: the same mask."""
    w, h = image_size
    rng = np.random.default_rng(scale * 100 + w)
    mask = rng.integers(0, 4, (h, w)).astype(np.uint8)
    in_w, in_h = -(-w * scale // 32) * 32, -(-h * scale // 32) * 32 + 32
    meta = make_letterbox_meta(w, h, in_w, in_h)
    if meta.scale_x != scale or meta.scale_y != scale:
        meta = LetterboxMeta(w, h, in_w, in_h, w * scale, h * scale, 0, 32)
    framed = letterbox_mask(mask, meta, pad_value=0)
    one_hot = (framed[None] == np.arange(4)[:, None, None]).astype(np.float32)
    for exact in (True, False):
        np.testing.assert_array_equal(logits_to_mask(one_hot, meta, stride=1, exact=exact), mask)


def test_many_classes_give_a_16_bit_mask() -> None:
    meta = make_letterbox_meta(10, 10, 32, 32)
    logits = np.zeros((300, 8, 8), np.float32)
    logits[299] = 1.0
    mask = logits_to_mask(logits, meta)
    assert mask.dtype == np.uint16 and np.all(mask == 299)
    np.testing.assert_array_equal(png_to_mask(mask_to_png(mask)), mask)


def test_shapes_are_checked() -> None:
    meta = make_letterbox_meta(10, 10, 64, 64)
    with pytest.raises(ValueError, match="do not match"):
        logits_to_mask(np.zeros((2, 8, 8), np.float32), meta)
    with pytest.raises(ValueError, match=r"\(K, h, w\)"):
        logits_to_mask(np.zeros((8, 8), np.float32), meta)


def test_class_shares_png_palette_and_overlay() -> None:
    rng = np.random.default_rng(3)
    mask = rng.integers(0, 3, (17, 29)).astype(np.uint8)
    shares = class_shares(mask, 4)
    np.testing.assert_allclose(shares, [(mask == c).mean() for c in range(4)])
    assert shares.sum() == pytest.approx(1.0)
    np.testing.assert_array_equal(png_to_mask(mask_to_png(mask)), mask)
    palette = make_palette(4)
    assert palette.shape == (4, 3) and len({tuple(c) for c in palette}) == 4
    assert tuple(palette[0]) == (0, 0, 0)
    np.testing.assert_array_equal(colorize(mask, palette), palette[mask])
    image = rng.integers(0, 256, (17, 29, 3), dtype=np.uint8)
    blended = overlay(image, mask, alpha=0.5, palette=palette)
    np.testing.assert_array_equal(blended[mask == 0], image[mask == 0])
    fg = mask > 0
    expected = np.rint(image[fg] * 0.5 + palette[mask[fg]] * 0.5)
    np.testing.assert_array_equal(blended[fg], expected)
    assert overlay_png(image, mask).startswith(b"\x89PNG")
    with pytest.raises(ValueError, match="differ in size"):
        overlay(image[:5], mask)


def _smooth_logits(rng: np.random.Generator, k: int, h: int, w: int) -> np.ndarray:
    noise = rng.standard_normal((k, h, w)).astype(np.float32)
    return np.cumsum(np.cumsum(noise, axis=1), axis=2) / 4


@pytest.mark.parametrize("seed", range(4))
def test_boundary_only_argmax_equals_full_bilinear_interpolation(seed: int) -> None:
    """The fast argmax equals torch's bilinear upsampling followed by a full argmax."""
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(seed)
    logits = _smooth_logits(rng, 5, 20, 24)
    meta = make_letterbox_meta(96, 80, 96, 80)  # no letterbox: the box is the whole map
    ref = F.interpolate(torch.from_numpy(logits)[None], scale_factor=4, mode="bilinear")
    expected = ref[0].argmax(dim=0).numpy()
    for exact in (True, False):
        np.testing.assert_array_equal(logits_to_mask(logits, meta, exact=exact), expected)


@pytest.mark.parametrize("size", [(37, 291, 64, 320), (300, 200, 160, 96), (50, 40, 96, 96)])
def test_fractional_boxes_match_a_dense_reference(size: tuple[int, int, int, int]) -> None:
    """Against a dense numpy evaluation of every pixel's interpolated logit vector."""
    rng = np.random.default_rng(sum(size))
    meta = make_letterbox_meta(*size)
    logits = _smooth_logits(rng, 4, meta.input_height // 4, meta.input_width // 4)
    x0, y0, x1, y1 = meta.content_box(4)
    w0, h0 = meta.orig_width, meta.orig_height
    sx = np.clip(x0 + (np.arange(w0) + 0.5) * (x1 - x0) / w0 - 0.5, 0, logits.shape[2] - 1)
    sy = np.clip(y0 + (np.arange(h0) + 0.5) * (y1 - y0) / h0 - 0.5, 0, logits.shape[1] - 1)
    ix, iy = np.floor(sx).astype(int), np.floor(sy).astype(int)
    jx, jy = np.minimum(ix + 1, logits.shape[2] - 1), np.minimum(iy + 1, logits.shape[1] - 1)
    fx, fy = (sx - ix)[None, None, :], (sy - iy)[None, :, None]
    top = logits[:, iy][:, :, ix] * (1 - fx) + logits[:, iy][:, :, jx] * fx
    bottom = logits[:, jy][:, :, ix] * (1 - fx) + logits[:, jy][:, :, jx] * fx
    expected = (top * (1 - fy) + bottom * fy).argmax(axis=0)
    mask = logits_to_mask(logits, meta, exact=True)
    assert (mask == expected).mean() >= 0.999  # float rounding may flip exact near-ties
    result = postprocess_segmentation(logits, meta)
    assert result.mask.shape == (h0, w0)
    np.testing.assert_allclose(result.shares, class_shares(result.mask, 4))


def test_class_shares_with_many_classes() -> None:
    mask = np.random.default_rng(5).integers(0, 40, (31, 23)).astype(np.uint8)
    np.testing.assert_allclose(class_shares(mask, 40), [(mask == c).mean() for c in range(40)])
