"""Pictures for people, in Pillow: boxes drawn on an image, and a legend strip under it.

Shared by the detection and segmentation tasks (so every transport gets the same
PNG). Colours come from ``care_serve.postprocess.segmentation.make_palette``; the
web page (``care_serve/transports/web/static/palette.js``) computes the same palette, so a
class has one colour everywhere. Detection class ``i`` is drawn in palette
colour ``i + 1`` (the palette without its black background entry), which gives
a class the colour it has in segmentation when the two models share the
"background is class 0" convention.

Text uses Pillow's bundled font (``ImageFont.load_default(size)``), so nothing
depends on fonts installed on the machine.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "LegendEntry",
    "Rect",
    "caption_layout",
    "contrast_ratio",
    "detection_palette",
    "draw_boxes",
    "encode_png",
    "font_size_for",
    "relative_luminance",
    "render_caption",
    "text_colour",
    "with_legend",
]

#: the legend strip's background and text colours.
LEGEND_BACKGROUND = (255, 255, 255)
LEGEND_TEXT = (20, 20, 20)
#: at most this many legend entries; the rest are summed up as "+N more".
MAX_LEGEND_ENTRIES = 12


@dataclass(frozen=True)
class LegendEntry:
    """One line of a legend: a colour swatch and its text."""

    colour: tuple[int, int, int]
    text: str


def detection_palette(palette: np.ndarray) -> np.ndarray:
    """Detection colours: the segmentation palette without its background entry."""
    return palette[1:]


def font_size_for(width: int, height: int) -> int:
    """A readable text size for an image of this size (12 to 28 px)."""
    return int(np.clip(round(min(width, height) / 28), 12, 28))


def relative_luminance(colour: Sequence[int]) -> float:
    """WCAG 2 relative luminance of an sRGB colour (0 black .. 1 white)."""

    def linear(c: float) -> float:
        c /= 255.0
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(float(c)) for c in colour[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast_ratio(a: Sequence[int], b: Sequence[int]) -> float:
    """WCAG 2 contrast ratio of two colours, 1 to 21 (4.5 is the minimum for body text)."""
    la, lb = sorted((relative_luminance(a), relative_luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def text_colour(colour: Sequence[int]) -> tuple[int, int, int]:
    """Black or white, whichever contrasts more with ``colour``: at least 4.58 (WCAG AA)."""
    white, black = (255, 255, 255), (0, 0, 0)
    return white if contrast_ratio(white, colour) >= contrast_ratio(black, colour) else black


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size)


#: a caption's place: ``(left, top, right, bottom)`` in pixels, right and bottom exclusive.
Rect = tuple[int, int, int, int]
#: the smallest caption text; a caption that does not fit the image even so is shortened.
MIN_CAPTION_SIZE = 8


@dataclass(frozen=True)
class _CaptionShape:
    text: str
    size: int
    width: int
    height: int
    pad: int
    left: int  # the text's left bearing (textbbox's left)


def _caption_shape(text: str, size: int) -> _CaptionShape:
    """The caption tile of ``text`` at ``size``: text width plus padding, one line high."""
    font = _font(size)
    pad = max(2, size // 6)
    if isinstance(font, ImageFont.FreeTypeFont):
        ascent, descent = font.getmetrics()
        line = ascent + descent
    else:  # pragma: no cover - Pillow without FreeType
        line = round(font.getbbox("Ag")[3])
    left, _, right, _ = (round(v) for v in font.getbbox(text or " "))
    return _CaptionShape(text, size, right - left + 2 * pad, line + 2 * pad, pad, left)


def _fit_caption(text: str, size: int, width: int, height: int) -> _CaptionShape | None:
    """``text`` at ``size``, smaller (down to ``MIN_CAPTION_SIZE``) then shortened ("..")
    until its tile fits a ``width`` x ``height`` image; None when nothing fits."""
    shape = _caption_shape(text, size)
    while (shape.width > width or shape.height > height) and shape.size > MIN_CAPTION_SIZE:
        shape = _caption_shape(text, shape.size - 1)
    kept = len(text)
    while shape.width > width and kept > 1:
        kept -= 1
        shape = _caption_shape(text[:kept].rstrip() + "..", shape.size)
    if shape.width > width or shape.height > height:
        return None
    return shape


def render_caption(text: str, colour: Sequence[int], size: int) -> Image.Image:
    """The caption tile: ``text`` in black or white (for contrast) on ``colour``."""
    shape = _caption_shape(text, size)
    fill = tuple(int(c) for c in colour[:3])
    tile = Image.new("RGB", (shape.width, shape.height), fill)
    ImageDraw.Draw(tile).text(
        (shape.pad - shape.left, shape.pad), text, fill=text_colour(fill), font=_font(size)
    )
    return tile


def _overlaps(a: Rect, b: Rect) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _candidates(box: Sequence[float], w: int, h: int, width: int, height: int) -> list[Rect]:
    """Places for a ``w`` x ``h`` caption of ``box``, best first, each inside the image.

    Above the box at its left edge, else inside it at the top (a box touching the top edge),
    below it, inside at the bottom; then a line further down or up from the first, and so
    on. Every place is shifted (left, down, up) as far as needed to lie inside the image.
    """
    x1, y1, _, y2 = (round(float(v)) for v in box)
    x = min(max(x1, 0), width - w)

    def at(y: int) -> Rect:
        y = min(max(y, 0), height - h)
        return (x, y, x + w, y + h)

    places = [at(y1 - h), at(y1), at(y2), at(y2 - h)]
    first = places[0][1]
    for k in range(1, height // h + 1):
        places += [at(first + k * h), at(first - k * h)]
    return list(dict.fromkeys(places))


def caption_layout(
    size: tuple[int, int], boxes: Sequence[Sequence[float]], captions: Sequence[str]
) -> list[tuple[str, int, Rect] | None]:
    """Where each caption goes: ``(text, font size, rect)``, or None when none fits at all.

    Every rect lies inside the ``size`` (width, height) image; the text is the caption, or
    shortened when even the smallest text is wider than the image. Captions are placed in
    the order given (best first), each at the first candidate place (``_candidates``) that
    overlaps no caption placed before, else at its first place.
    """
    width, height = size
    font_size = font_size_for(width, height)
    placed: list[Rect] = []
    layout: list[tuple[str, int, Rect] | None] = []
    for box, caption in zip(boxes, captions, strict=True):
        shape = _fit_caption(caption, font_size, width, height)
        if shape is None:
            layout.append(None)
            continue
        places = _candidates(box, shape.width, shape.height, width, height)
        rect = next((p for p in places if not any(_overlaps(p, q) for q in placed)), places[0])
        placed.append(rect)
        layout.append((shape.text, shape.size, rect))
    return layout


def draw_boxes(
    image: Image.Image,
    boxes: Sequence[Sequence[float]],
    captions: Sequence[str],
    colours: Sequence[tuple[int, int, int]],
) -> Image.Image:
    """A copy of ``image`` (RGB) with each box outlined and captioned in its colour.

    ``boxes`` are ``[x1, y1, x2, y2]`` in the image's pixels (continuous
    coordinates), given best first. The outlines are drawn first, then the captions
    (``caption_layout``: inside the image, apart where it can, on a tile of the box's
    colour with black or white text), lowest score first, so the best ends up on top.
    """
    if not len(boxes) == len(captions) == len(colours):
        raise ValueError(
            f"{len(boxes)} boxes, {len(captions)} captions and {len(colours)} colours differ"
        )
    out = image.convert("RGB")
    draw = ImageDraw.Draw(out)
    width, height = out.size
    line = max(2, round(min(width, height) / 160))
    for box, colour in reversed(list(zip(boxes, colours, strict=True))):
        x1, y1, x2, y2 = (float(v) for v in box)
        draw.rectangle(
            (round(x1), round(y1), max(round(x1), round(x2) - 1), max(round(y1), round(y2) - 1)),
            outline=colour,
            width=line,
        )
    layout = caption_layout(out.size, boxes, captions)
    for place, colour in reversed(list(zip(layout, colours, strict=True))):
        if place is not None:
            text, size, rect = place
            out.paste(render_caption(text, colour, size), rect[:2])
    return out


def with_legend(image: Image.Image, entries: Sequence[LegendEntry], title: str) -> Image.Image:
    """``image`` unchanged at the top left, a legend strip (``title``, then ``entries``) below.

    The canvas is as wide as the image or the legend, whichever is wider; more
    than ``MAX_LEGEND_ENTRIES`` entries are cut to that many plus a "+N more" line.
    """
    shown = list(entries[:MAX_LEGEND_ENTRIES])
    hidden = len(entries) - len(shown)
    lines = [title, *(e.text for e in shown)] + ([f"+{hidden} more"] if hidden else [])
    src = image.convert("RGB")
    size = font_size_for(max(src.width, 320), max(src.height, 320))
    font = _font(size)
    probe = ImageDraw.Draw(src)
    pad, gap, swatch = size // 2 + 4, size // 3 + 2, size
    text_w = math.ceil(max(probe.textbbox((0, 0), text, font=font)[2] for text in lines))
    row_h = math.ceil(max(size, *(probe.textbbox((0, 0), t, font=font)[3] for t in lines))) + gap
    legend_w = pad * 2 + swatch + gap + text_w
    legend_h = pad * 2 + row_h * len(lines) - gap
    out = Image.new("RGB", (max(src.width, legend_w), src.height + legend_h), LEGEND_BACKGROUND)
    out.paste(src, (0, 0))
    draw = ImageDraw.Draw(out)
    y = src.height + pad
    draw.text((pad, y), title, fill=LEGEND_TEXT, font=font)
    y += row_h
    for entry in shown:
        draw.rectangle(
            (pad, y, pad + swatch - 1, y + swatch - 1), fill=entry.colour, outline=LEGEND_TEXT
        )
        draw.text((pad + swatch + gap, y), entry.text, fill=LEGEND_TEXT, font=font)
        y += row_h
    if hidden:
        draw.text((pad + swatch + gap, y), lines[-1], fill=LEGEND_TEXT, font=font)
    return out


def encode_png(image: Image.Image) -> bytes:
    """``image`` as PNG bytes (fast compression: these are made per request)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=3)
    return buf.getvalue()
