"""Which results of a stream become events, and how the preview draws them."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

from care_serve.store.streams import EventFilter
from care_serve.streams.events import EventGate, annotate_jpeg, objects_of


def _detections(*found: tuple[str, float, str | None]) -> dict[str, Any]:
    detections = []
    for label, score, named in found:
        classification = (
            {"model": "c", "version": 1, "predictions": [{"label": named, "score": 0.9}]}
            if named
            else None
        )
        detections.append(
            {
                "label": label,
                "score": score,
                "box": [10, 10, 50, 50],
                "classification": classification,
            }
        )
    return {"pipeline": "p", "detections": detections, "timings_ms": {}}


def test_every_result_passes_by_default() -> None:
    gate = EventGate(EventFilter())
    assert gate.passes(_detections())
    assert gate.passes(_detections(("circle", 0.9, None)))


def test_labels_and_min_score_keep_only_matching_results() -> None:
    gate = EventGate(EventFilter(labels=("square",), min_score=0.5))
    assert not gate.passes(_detections(("circle", 0.9, None)))
    assert not gate.passes(_detections(("square", 0.4, None)))
    assert gate.passes(_detections(("square", 0.6, None)))
    assert gate.passes(_detections(("circle", 0.9, "square")))  # the classifier's label counts


def test_on_change_sends_only_when_what_is_seen_changes() -> None:
    gate = EventGate(EventFilter(on_change=True))
    seen = [
        gate.passes(r)
        for r in (
            _detections(("circle", 0.9, None)),
            _detections(("circle", 0.8, None)),
            _detections(("circle", 0.8, None), ("square", 0.7, None)),
            _detections(("square", 0.7, None), ("circle", 0.6, None)),
            _detections(),
            _detections(),
        )
    ]
    assert seen == [True, False, True, False, True, False]


def test_classification_results_name_their_top_class() -> None:
    result = {
        "predictions": [{"label": "cat", "probability": 0.8}, {"label": "dog", "probability": 0.1}]
    }
    assert list(objects_of(result)) == [("cat", 0.8)]


def test_the_preview_is_a_jpeg_of_the_frame_with_the_boxes_drawn() -> None:
    pixels = np.full((120, 160, 3), 128, np.uint8)
    plain = Image.open(io.BytesIO(annotate_jpeg(pixels, None)))
    drawn = Image.open(io.BytesIO(annotate_jpeg(pixels, _detections(("circle", 0.9, "circle")))))
    assert plain.format == drawn.format == "JPEG" and drawn.size == (160, 120)
    difference = np.abs(np.asarray(drawn, np.int16) - np.asarray(plain, np.int16))
    assert difference[8:52, 8:52].max() > 60  # the box's outline
    assert difference[80:, 100:].max() < 20  # away from it, the frame is unchanged
