"""Per-bucket metrics: where in the data distribution a model is weak.

``care-serve generate`` writes each scene's style to ``DIR/styles_SPLIT.json``
(keyed by the image path relative to ``DIR``): the background, the blur /
sensor-noise / JPEG degradations, and per shape its size bucket, fill
(filled or outline), line width and whether the border cuts it. A bucket is a
named subset:

- *image buckets* (every image is in one background bucket and in ``clean`` or
  any of ``blur``, ``noise``, ``jpeg``): ``background=photo``, ``jpeg``, ...;
- *shape buckets*: ``size<15%``, ``size15-40%``, ``size40-70%``, ``size>=70%``
  (the larger side of the uncut box over the shorter image side), ``filled``,
  ``outline``, ``line=1.5`` / ``2.5`` / ``4`` (outline widths in model-input
  pixels of a 320 input) and ``cut`` (partly outside the image).

A classification image holds one shape, so it is in the buckets of its shape
too. :class:`BucketCounter` accumulates counts per bucket; what a count means
is up to the task's evaluator (``care_serve.offline.evaluation.evaluate``).
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from care_serve.offline.data.wide import SIZE_BUCKETS

__all__ = [
    "BUCKET_ORDER",
    "BucketCounter",
    "image_buckets",
    "load_styles",
    "shape_buckets",
    "weakest_buckets",
]

BUCKET_ORDER: tuple[str, ...] = (
    *(name for name, _ in SIZE_BUCKETS),
    "filled",
    "outline",
    "line=1.5",
    "line=2.5",
    "line=4",
    "cut",
    "background=solid",
    "background=gradient",
    "background=noise",
    "background=texture",
    "background=photo",
    "clean",
    "blur",
    "noise",
    "jpeg",
)


def load_styles(data_dir: str | os.PathLike[str], split: str) -> dict[str, dict[str, Any]] | None:
    """The scene styles of a generated split (path relative to ``data_dir`` -> style), if any."""
    path = Path(data_dir) / f"styles_{split}.json"
    if not path.is_file():
        return None
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        images = document["images"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return images if isinstance(images, dict) else None


def style_of(
    styles: Mapping[str, dict[str, Any]] | None, data_dir: str | os.PathLike[str], path: Any
) -> dict[str, Any] | None:
    """The style of the image at ``path`` (absolute or relative), or ``None``."""
    if styles is None:
        return None
    try:
        key = Path(path).resolve().relative_to(Path(data_dir).resolve()).as_posix()
    except ValueError:
        return None
    return styles.get(key)


def image_buckets(style: Mapping[str, Any]) -> list[str]:
    """The image buckets of a scene style."""
    names = [f"background={style.get('background', 'solid')}"]
    degraded = [k for k in ("blur", "noise", "jpeg") if style.get(k)]
    return names + (degraded or ["clean"])


def shape_buckets(attrs: Mapping[str, Any]) -> list[str]:
    """The shape buckets of one shape's style record."""
    names = [str(attrs.get("size_bucket", "")), str(attrs.get("fill", "filled"))]
    if attrs.get("fill") == "outline":
        names.append(f"line={float(attrs.get('line_width', 0)):g}")
    if attrs.get("cut"):
        names.append("cut")
    return [n for n in names if n]


class BucketCounter:
    """Named counts per bucket, e.g. ``add(["size<15%"], "hit", 1)``."""

    def __init__(self) -> None:
        self.counts: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))

    def add(self, buckets: Iterable[str], key: str, value: float = 1.0) -> None:
        """Add ``value`` to counter ``key`` of every bucket in ``buckets``."""
        for bucket in buckets:
            self.counts[bucket][key] += value

    def ordered(self) -> list[tuple[str, dict[str, float]]]:
        """(bucket, counters) in ``BUCKET_ORDER`` (then any others, sorted)."""
        rank = {name: i for i, name in enumerate(BUCKET_ORDER)}
        names = sorted(self.counts, key=lambda n: (rank.get(n, len(rank)), n))
        return [(n, dict(self.counts[n])) for n in names]


def weakest_buckets(
    buckets: Mapping[str, Mapping[str, float]], metric: str, min_count: int = 10, n: int = 3
) -> list[dict[str, Any]]:
    """The ``n`` buckets of lowest ``metric`` among those of at least ``min_count`` items."""
    rows: list[tuple[float, int, str]] = [
        (float(values[metric]), int(values["count"]), name)
        for name, values in buckets.items()
        if metric in values and values.get("count", 0) >= min_count
    ]
    rows.sort(key=lambda r: (r[0], -r[1]))
    return [{"bucket": name, metric: round(v, 4), "count": c} for v, c, name in rows[:n]]
