"""Pictures for people: boxes on an image, legend strips, colours (postprocess.drawing)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from care_serve.postprocess.drawing import (
    MAX_LEGEND_ENTRIES,
    LegendEntry,
    caption_layout,
    contrast_ratio,
    detection_palette,
    draw_boxes,
    render_caption,
    text_colour,
    with_legend,
)
from care_serve.postprocess.segmentation import legend_entries, make_palette

# Tiny tensors: one torch thread (see the fixture in tests/conftest.py).
pytestmark = pytest.mark.usefixtures("single_thread_torch")

GREY = (90, 90, 90)
RED = (200, 0, 0)


def grey(width: int = 200, height: int = 120) -> Image.Image:
    return Image.new("RGB", (width, height), GREY)


def test_a_box_is_outlined_and_captioned_in_its_colour_and_the_rest_is_unchanged() -> None:
    image = grey()
    out = np.asarray(draw_boxes(image, [(20.0, 50.0, 120.0, 110.0)], ["circle 0.93"], [RED]))
    assert out.shape == (120, 200, 3)
    assert tuple(out[80, 20]) == RED and tuple(out[80, 119]) == RED  # left and right edges
    assert tuple(out[50, 70]) == RED and tuple(out[109, 70]) == RED  # top and bottom edges
    assert tuple(out[80, 70]) == GREY  # inside the box
    assert tuple(out[48, 22]) == RED  # the caption's background, above the box
    caption = out[30:50, 20:120]
    assert (caption.max(axis=2) > 230).any()  # white text on the dark red caption
    assert (out[:, 150:][out[:, 150:] != GREY[0]]).size == 0  # nothing drawn right of the box
    assert tuple(np.asarray(image)[80, 20]) == GREY  # the input is not modified


def test_a_caption_goes_inside_a_box_at_the_top_and_stays_in_the_image() -> None:
    out = np.asarray(draw_boxes(grey(), [(150.0, 0.0, 200.0, 60.0)], ["triangle 0.50"], [RED]))
    assert tuple(out[3, 198]) == RED  # caption inside, at the top right, not cut off
    assert tuple(out[30, 60]) == GREY
    with pytest.raises(ValueError, match="differ"):
        draw_boxes(grey(), [(0, 0, 1, 1)], [], [RED])


def test_the_legend_strip_sits_below_the_unchanged_image() -> None:
    image = grey(300, 80)
    entries = [LegendEntry((0, 128, 0), "square: 12.0 %"), LegendEntry((128, 0, 0), "circle: 3 %")]
    out = np.asarray(with_legend(image, entries, "share of the pixels"))
    assert out.shape[0] > 80 and out.shape[1] == 300
    np.testing.assert_array_equal(out[:80], np.asarray(image))
    strip = out[80:].reshape(-1, 3)
    colours = {tuple(p) for p in np.unique(strip[strip.max(1) != strip.min(1)], axis=0)}
    assert colours == {(0, 128, 0), (128, 0, 0)}

    tiny = np.asarray(with_legend(grey(9, 7), entries, "legend"))
    assert tiny.shape[1] > 9  # a legend wider than the image widens the canvas
    np.testing.assert_array_equal(tiny[:7, :9], np.asarray(grey(9, 7)))


def test_long_legends_are_cut_to_a_dozen_entries() -> None:
    entries = [LegendEntry((10 * c, 200, 0), f"class {c}") for c in range(MAX_LEGEND_ENTRIES + 3)]
    out = np.asarray(with_legend(grey(), entries, "many")).reshape(-1, 3)
    colours = {tuple(int(v) for v in p) for p in out[out.max(1) != out.min(1)]}
    assert colours == {e.colour for e in entries[:MAX_LEGEND_ENTRIES]}


def test_legend_entries_list_present_classes_largest_first_without_background() -> None:
    palette = make_palette(4)
    entries = legend_entries(
        [0.7, 0.05, 0.0, 0.25], ["bg", "circle", "square", "triangle"], palette
    )
    assert [e.text for e in entries] == ["triangle: 25.0 %", "circle: 5.0 %"]
    assert entries[0].colour == tuple(int(v) for v in palette[3])


def test_colours_and_text_contrast() -> None:
    palette = make_palette(4)
    np.testing.assert_array_equal(detection_palette(palette), palette[1:])
    assert text_colour((128, 0, 0)) == (255, 255, 255)
    assert text_colour((255, 255, 0)) == (0, 0, 0)
    assert text_colour((0, 128, 0)) == (255, 255, 255)


# -- captions: inside the image, apart from each other, readable --------------------------
def _inside(rect: tuple[int, int, int, int], width: int, height: int) -> bool:
    left, top, right, bottom = rect
    return 0 <= left < right <= width and 0 <= top < bottom <= height


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _check_drawn(
    width: int, height: int, boxes: list[tuple[float, float, float, float]], captions: list[str]
) -> list[tuple[int, int, int, int]]:
    """Draw; every caption is whole (its pixels are its rendering) inside the image; apart."""
    colours = [tuple(int(v) for v in c) for c in detection_palette(make_palette(len(boxes) + 1))]
    image = grey(width, height)
    out = draw_boxes(image, boxes, captions, colours)  # type: ignore[arg-type]
    placed = caption_layout(image.size, boxes, captions)
    rects = []
    for caption, colour, place in zip(captions, colours, placed, strict=True):
        assert place is not None, caption
        text, size, rect = place
        assert _inside(rect, width, height), (caption, rect, (width, height))
        tile = np.asarray(render_caption(text, colour, size))
        assert tile.shape[:2] == (rect[3] - rect[1], rect[2] - rect[0])
        np.testing.assert_array_equal(np.asarray(out)[rect[1] : rect[3], rect[0] : rect[2]], tile)
        rects.append(rect)
    for i, a in enumerate(rects):
        for b in rects[i + 1 :]:
            assert not _overlap(a, b), (a, b)
    return rects


@pytest.mark.parametrize(
    "box",
    [
        (0.0, 30.0, 40.0, 60.0),  # touches the left edge
        (130.0, 30.0, 160.0, 60.0),  # the right edge, narrower than its caption
        (40.0, 0.0, 90.0, 30.0),  # the top edge
        (40.0, 80.0, 90.0, 100.0),  # the bottom edge
        (150.0, 90.0, 160.0, 100.0),  # a small box in the bottom right corner
        (0.0, 0.0, 160.0, 100.0),  # the whole image
    ],
)
def test_a_caption_is_whole_and_inside_the_image_wherever_its_box_is(
    box: tuple[float, float, float, float],
) -> None:
    _check_drawn(160, 100, [box], ["circle 0.87"])


def test_captions_of_overlapping_boxes_do_not_overlap() -> None:
    boxes = [(20.0, 40.0, 100.0, 90.0), (24.0, 44.0, 104.0, 94.0), (30.0, 38.0, 90.0, 70.0)]
    rects = _check_drawn(160, 120, boxes, ["circle 0.87", "square 0.61", "hexagon 0.40"])
    assert len(rects) == 3


def test_captions_at_the_top_edge_and_side_by_side_do_not_overlap() -> None:
    boxes = [(0.0, 0.0, 60.0, 50.0), (10.0, 0.0, 70.0, 40.0), (100.0, 60.0, 160.0, 100.0)]
    _check_drawn(160, 100, boxes, ["triangle 0.91", "star 0.77", "circle 0.50"])


def test_a_caption_wider_than_the_image_is_shrunk_to_fit() -> None:
    (rect,) = _check_drawn(40, 30, [(0.0, 0.0, 40.0, 30.0)], ["hexagon 0.99"])
    assert rect[2] - rect[0] <= 40


def test_every_palette_colour_gets_caption_text_with_contrast_of_at_least_4_5() -> None:
    palette = make_palette(256)
    for colour in {tuple(int(v) for v in c) for c in palette}:
        text = text_colour(colour)
        assert contrast_ratio(text, colour) >= 4.5, (colour, text)
        tile = np.asarray(render_caption("circle 0.87", colour, 12))
        pixels = {tuple(int(v) for v in p) for p in tile.reshape(-1, 3)}
        assert colour in pixels and text in pixels  # the background and solid text strokes
    assert contrast_ratio((0, 0, 0), (255, 255, 255)) == pytest.approx(21.0)
    assert contrast_ratio((128, 0, 0), (255, 255, 255)) == pytest.approx(10.95, abs=0.01)
