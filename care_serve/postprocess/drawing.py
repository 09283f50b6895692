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
    "detection_palette",
    "draw_boxes",
    "encode_png",
    "font_size_for",
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


def text_colour(colour: Sequence[int]) -> tuple[int, int, int]:
    """Black or white, whichever reads better on ``colour`` (WCAG relative luminance)."""

    def linear(c: float) -> float:
        c /= 255.0
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(float(c)) for c in colour[:3])
    luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
    # contrast with white (1.05 / (L + 0.05)) against contrast with black ((L + 0.05) / 0.05)
    return (255, 255, 255) if 1.05 / (luminance + 0.05) >= (luminance + 0.05) / 0.05 else (0, 0, 0)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size)


def draw_boxes(
    image: Image.Image,
    boxes: Sequence[Sequence[float]],
    captions: Sequence[str],
    colours: Sequence[tuple[int, int, int]],
) -> Image.Image:
    """A copy of ``image`` (RGB) with each box outlined and captioned in its colour.

    ``boxes`` are ``[x1, y1, x2, y2]`` in the image's pixels (continuous
    coordinates); drawn lowest score first when given best first, so the best
    box and its caption end up on top.
    """
    if not len(boxes) == len(captions) == len(colours):
        raise ValueError(
            f"{len(boxes)} boxes, {len(captions)} captions and {len(colours)} colours differ"
        )
    out = image.convert("RGB")
    draw = ImageDraw.Draw(out)
    width, height = out.size
    line = max(2, round(min(width, height) / 160))
    size = font_size_for(width, height)
    font = _font(size)
    pad = max(2, size // 6)
    for box, caption, colour in reversed(list(zip(boxes, captions, colours, strict=True))):
        x1, y1, x2, y2 = (float(v) for v in box)
        draw.rectangle(
            (round(x1), round(y1), max(round(x1), round(x2) - 1), max(round(y1), round(y2) - 1)),
            outline=colour,
            width=line,
        )
        left, top, right, bottom = (round(v) for v in draw.textbbox((0, 0), caption, font=font))
        tag_w, tag_h = right - left + 2 * pad, bottom - top + 2 * pad
        tx = int(np.clip(round(x1), 0, max(0, width - tag_w)))
        ty = round(y1) - tag_h if round(y1) - tag_h >= 0 else round(y1)
        draw.rectangle((tx, ty, tx + tag_w - 1, ty + tag_h - 1), fill=colour)
        draw.text((tx + pad - left, ty + pad - top), caption, fill=text_colour(colour), font=font)
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
