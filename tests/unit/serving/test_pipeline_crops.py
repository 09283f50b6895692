"""How a pipeline's boxes become the crops its classifier sees."""

from __future__ import annotations

import numpy as np

from care_serve.serving.pipelines import crop_boxes
from care_serve.store.pipelines import CropSpec


def _image() -> np.ndarray:
    rng = np.random.default_rng()
    return rng.integers(0, 256, (100, 200, 3), dtype=np.uint8)


def test_a_box_is_padded_on_every_side_and_keeps_the_pixels() -> None:
    pixels = _image()
    kept, crops = crop_boxes(pixels, [(50.0, 20.0, 70.0, 60.0)], CropSpec(padding=0.5))
    assert kept == [0]
    # 20 wide, 40 high: 10 and 20 pixels more on each side.
    assert np.array_equal(crops[0].pixels, pixels[0:80, 40:80])


def test_padding_stops_at_the_image_border() -> None:
    pixels = _image()
    _, crops = crop_boxes(pixels, [(0.0, 0.0, 200.0, 100.0)], CropSpec(padding=0.3))
    assert crops[0].pixels.shape == (100, 200, 3)


def test_at_most_max_boxes_in_order_and_small_boxes_skipped() -> None:
    boxes = [(0.0, 0.0, 10.0, 10.0), (5.0, 5.0, 7.0, 7.0), (20.0, 20.0, 40.0, 40.0)]
    boxes += [(60.0, 10.0, 90.0, 50.0), (100.0, 10.0, 150.0, 60.0)]
    kept, crops = crop_boxes(_image(), boxes, CropSpec(padding=0.0, max_boxes=3, min_size=4))
    assert kept == [0, 2, 3]  # the 2x2 box is skipped; the fifth is beyond max_boxes
    assert [c.pixels.shape[:2] for c in crops] == [(10, 10), (20, 20), (40, 30)]


def test_no_boxes_no_crops() -> None:
    assert crop_boxes(_image(), [], CropSpec()) == ([], [])
