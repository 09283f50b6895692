"""A stream's events: what one processed frame gives, which ones are sent, and its picture.

An event is ``{"stream", "frame", "source_time", "captured_at", "latency_ms",
"result"}`` where ``result`` is exactly what the REST endpoint of the stream's
pipeline or model answers for that frame. ``EventFilter`` keeps only results
holding given labels, above a score, or only when what is seen changes.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import numpy as np
from PIL import Image
from pydantic import BaseModel, Field

from care_serve.postprocess.drawing import draw_boxes
from care_serve.store.streams import EventFilter

__all__ = ["EventGate", "StreamEvent", "annotate_jpeg", "objects_of"]

_COLOURS = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180))


class StreamEvent(BaseModel):
    """One processed frame of a stream."""

    stream: str
    frame: int = Field(description="The frame's number in the stream (every decoded frame counts).")
    source_time: float | None = Field(description="The frame's timestamp in the source, seconds.")
    captured_at: float = Field(description="When the decoder gave the frame (Unix time, seconds).")
    latency_ms: float = Field(description="From the decoder giving the frame to this event.")
    result: dict[str, Any] = Field(description="What the REST endpoint answers for the frame.")


def objects_of(result: dict[str, Any]) -> Iterator[tuple[str, float]]:
    """(label, score) of everything a result names: detections (and their class), top classes."""
    for detection in result.get("detections", ()):
        classification = detection.get("classification")
        if classification and classification.get("predictions"):
            top = classification["predictions"][0]
            yield str(top["label"]), float(top["score"])
        yield str(detection["label"]), float(detection["score"])
    predictions = result.get("predictions") or ()
    if predictions:
        top = predictions[0]
        yield str(top["label"]), float(top.get("probability", top.get("score", 0.0)))


class EventGate:
    """Decides which results become events, by a stream's ``EventFilter``."""

    def __init__(self, rule: EventFilter) -> None:
        self.rule = rule
        self._last: tuple[str, ...] | None = None

    def passes(self, result: dict[str, Any]) -> bool:
        rule = self.rule
        seen = [(label, score) for label, score in objects_of(result) if score >= rule.min_score]
        if rule.labels:
            seen = [(label, score) for label, score in seen if label in rule.labels]
        if rule.on_change:
            current = tuple(sorted({label for label, _ in seen}))
            changed = current != self._last
            self._last = current
            return changed
        if rule.labels or rule.min_score > 0:
            return bool(seen)
        return True


def _caption(detection: dict[str, Any]) -> str:
    classification = detection.get("classification")
    if classification and classification.get("predictions"):
        top = classification["predictions"][0]
        return f"{top['label']} {float(top['score']):.2f}"
    return f"{detection['label']} {float(detection['score']):.2f}"


def annotate_jpeg(pixels: np.ndarray, result: dict[str, Any] | None, quality: int = 80) -> bytes:
    """The frame as a JPEG, with the result's boxes and labels drawn on it."""
    image = Image.fromarray(pixels, mode="RGB")
    detections = (result or {}).get("detections") or []
    if detections:
        labels = sorted({str(d["label"]) for d in detections})
        colours = [_COLOURS[labels.index(str(d["label"])) % len(_COLOURS)] for d in detections]
        image = draw_boxes(
            image, [d["box"] for d in detections], [_caption(d) for d in detections], colours
        )
    elif result and result.get("predictions"):
        top = result["predictions"][0]
        label = f"{top['label']} {float(top.get('probability', 0.0)):.2f}"
        box = (0.0, 0.0, float(image.width), float(image.height))
        image = draw_boxes(image, [box], [label], [_COLOURS[0]])
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()
