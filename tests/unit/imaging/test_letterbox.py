"""Letterbox preprocessing and its exact inverse, over many sizes and aspect ratios."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from care_serve.errors import InvalidInput
from care_serve.imaging.letterbox import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    dynamic_input_size,
    letterbox_image,
    letterbox_mask,
    make_letterbox_meta,
    preprocess,
)

# Tiny tensors: one torch thread (see the fixture in tests/conftest.py).
pytestmark = pytest.mark.usefixtures("single_thread_torch")

# (width, height) of client images: odd sizes, aspect ratios 1:2 to 2:1 and beyond.
IMAGE_SIZES = [
    (37, 291),
    (291, 37),
    (128, 256),
    (256, 128),
    (640, 480),
    (480, 640),
    (333, 333),
    (1023, 517),
    (150, 299),
    (17, 19),
    (1, 1),
]
INPUT_SIZES = [(320, 320), (256, 320), (320, 192), (96, 64)]


def _random_boxes(rng: np.random.Generator, w: int, h: int, n: int = 20) -> np.ndarray:
    x = np.sort(rng.uniform(0, w, (n, 2)), axis=1)
    y = np.sort(rng.uniform(0, h, (n, 2)), axis=1)
    return np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], axis=1)


@pytest.mark.parametrize("image_size", IMAGE_SIZES)
@pytest.mark.parametrize("input_size", INPUT_SIZES)
def test_meta_fits_input_and_keeps_aspect(
    image_size: tuple[int, int], input_size: tuple[int, int]
) -> None:
    meta = make_letterbox_meta(*image_size, *input_size)
    assert meta.pad_left >= 0 and meta.pad_top >= 0
    assert meta.pad_left + meta.resized_width <= meta.input_width
    assert meta.pad_top + meta.resized_height <= meta.input_height
    # One side fills the input; the aspect is kept up to rounding to whole pixels.
    assert meta.resized_width == input_size[0] or meta.resized_height == input_size[1]
    scale = min(input_size[0] / image_size[0], input_size[1] / image_size[1])
    assert abs(meta.resized_width - image_size[0] * scale) <= 0.5 + 1e-9
    assert abs(meta.resized_height - image_size[1] * scale) <= 0.5 + 1e-9
    # Centred: the two margins differ by at most one pixel.
    assert abs(2 * meta.pad_left + meta.resized_width - meta.input_width) <= 1
    assert abs(2 * meta.pad_top + meta.resized_height - meta.input_height) <= 1


@pytest.mark.parametrize("image_size", IMAGE_SIZES)
@pytest.mark.parametrize("input_size", INPUT_SIZES)
def test_boxes_round_trip_exactly(image_size: tuple[int, int], input_size: tuple[int, int]) -> None:
    rng = np.random.default_rng(image_size[0] * 7919 + input_size[1])
    meta = make_letterbox_meta(*image_size, *input_size)
    boxes = _random_boxes(rng, *image_size)
    back = meta.boxes_to_original(meta.boxes_to_input(boxes))
    np.testing.assert_allclose(back, boxes, rtol=0, atol=1e-9)
    # The full image maps onto the content region exactly.
    full = meta.boxes_to_input(np.array([[0, 0, image_size[0], image_size[1]]]))[0]
    np.testing.assert_allclose(full, meta.content_box(), atol=1e-9)


def test_boxes_are_clipped_to_the_image() -> None:
    meta = make_letterbox_meta(100, 50, 320, 320)
    out = meta.boxes_to_original(np.array([[-50.0, -50.0, 400.0, 400.0]]))
    np.testing.assert_array_equal(out, [[0, 0, 100, 50]])


@pytest.mark.parametrize(
    "image_size", [(37, 291), (291, 37), (640, 480), (150, 299), (1023, 517), (2500, 1300)]
)
@pytest.mark.parametrize("input_size", [(320, 320), (256, 320)])
def test_drawn_box_lands_where_the_meta_says(
    image_size: tuple[int, int], input_size: tuple[int, int]
) -> None:
    """A white rectangle drawn at known pixels appears at ``boxes_to_input`` after resizing."""
    w, h = image_size
    box = np.array([w // 5, h // 4, w // 5 + max(4, w // 2), h // 4 + max(4, h // 2)])
    image = np.zeros((h, w, 3), np.uint8)
    image[box[1] : box[3], box[0] : box[2]] = 255
    canvas, meta = letterbox_image(image, input_size, fill=(0, 0, 0))
    ys, xs = np.nonzero(canvas[..., 0] >= 128)
    found = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)
    expected = meta.boxes_to_input(box[None].astype(np.float64))[0]
    np.testing.assert_allclose(found, expected, atol=1.0)


@pytest.mark.parametrize("image_size", [(37, 291), (640, 480), (17, 19)])
def test_preprocess_normalises_and_pads_with_zero(image_size: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (image_size[1], image_size[0], 3), dtype=np.uint8)
    x, meta = preprocess(Image.fromarray(image), (320, 256))
    assert x.shape == (3, 256, 320) and x.dtype == np.float32
    # Padding is the mean colour, i.e. exactly 0 after normalisation.
    content = np.zeros(x.shape[1:], bool)
    content[
        meta.pad_top : meta.pad_top + meta.resized_height,
        meta.pad_left : meta.pad_left + meta.resized_width,
    ] = True
    assert np.all(x[:, ~content] == 0)
    # Content equals the resized pixels normalised by hand.
    resized = np.asarray(
        Image.fromarray(image).resize((meta.resized_width, meta.resized_height), Image.BILINEAR),
        np.float64,
    )
    ref = (resized / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    got = x[:, content].T.reshape(meta.resized_height, meta.resized_width, 3)
    np.testing.assert_allclose(got, ref, atol=1e-5)


@pytest.mark.parametrize("image_size", IMAGE_SIZES)
@pytest.mark.parametrize("max_side", [320, 512])
def test_dynamic_input_size_keeps_aspect(image_size: tuple[int, int], max_side: int) -> None:
    w, h = dynamic_input_size(*image_size, max_side)
    assert w % 32 == 0 and h % 32 == 0 and max(w, h) == max_side
    meta = make_letterbox_meta(*image_size, w, h)
    # Less than one multiple of padding on each axis.
    assert meta.input_width - meta.resized_width < 32
    assert meta.input_height - meta.resized_height < 32
    x, meta2 = preprocess(np.zeros((image_size[1], image_size[0], 3), np.uint8), max_side=max_side)
    assert x.shape == (3, h, w) and meta2 == meta


@pytest.mark.parametrize("scale", [1, 2, 3])
@pytest.mark.parametrize("image_size", [(40, 20), (16, 32), (31, 17)])
def test_letterbox_mask_is_nearest_and_pads_with_ignore(
    scale: int, image_size: tuple[int, int]
) -> None:
    w, h = image_size
    rng = np.random.default_rng(scale)
    mask = rng.integers(0, 5, (h, w)).astype(np.uint8)
    meta = make_letterbox_meta(w, h, w * scale, h * scale + 30)  # scale is exact
    out = letterbox_mask(mask, meta)
    assert (meta.resized_width, meta.resized_height) == (w * scale, h * scale)
    region = out[meta.pad_top : meta.pad_top + h * scale, meta.pad_left : meta.pad_left + w * scale]
    np.testing.assert_array_equal(region, np.kron(mask, np.ones((scale, scale), np.uint8)))
    assert (out == 255).sum() == out.size - region.size


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((10, 10), np.uint8),
        np.zeros((10, 10, 4), np.uint8),
        np.zeros((10, 10, 3), np.float32),
        np.zeros((0, 10, 3), np.uint8),
        "not an image",
    ],
)
def test_bad_images_are_rejected_clearly(bad: object) -> None:
    with pytest.raises(InvalidInput, match=r"expected|empty"):
        preprocess(bad, (64, 64))  # type: ignore[arg-type]


def test_bad_sizes_are_rejected_clearly() -> None:
    image = np.zeros((10, 10, 3), np.uint8)
    with pytest.raises(InvalidInput, match="multiples of 32"):
        preprocess(image, (100, 64))
    with pytest.raises(InvalidInput, match="exactly one"):
        preprocess(image)
    with pytest.raises(InvalidInput, match="max_side"):
        preprocess(image, max_side=100)
    with pytest.raises(InvalidInput, match="mask shape"):
        letterbox_mask(np.zeros((5, 5), np.uint8), make_letterbox_meta(10, 10, 64, 64))
