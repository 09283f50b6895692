"""Per-bucket evaluation: bucket membership, counts on hand-made detections, weakest buckets."""

from __future__ import annotations

import numpy as np

from care_serve.offline.evaluation.buckets import image_buckets, shape_buckets, weakest_buckets
from care_serve.offline.evaluation.evaluate import _detection_buckets
from care_serve.offline.evaluation.metrics import ImageDetections
from care_serve.offline.training.card import (
    card_evaluation_notes,
    default_description,
    training_domain,
)


def _attrs(size: float, bucket: str, fill: str = "filled", cut: bool = False) -> dict:
    width = 2.5 if fill == "outline" else 0.0
    return {"size": size, "size_bucket": bucket, "fill": fill, "line_width": width, "cut": cut}


def test_bucket_membership() -> None:
    style = {"background": "photo", "blur": 0.5, "noise": 0.0, "jpeg": 40}
    assert image_buckets(style) == ["background=photo", "blur", "jpeg"]
    assert image_buckets({"background": "solid", "blur": 0, "noise": 0, "jpeg": 0}) == [
        "background=solid",
        "clean",
    ]
    assert shape_buckets(_attrs(0.8, "size>=70%", "outline", cut=True)) == [
        "size>=70%",
        "outline",
        "line=2.5",
        "cut",
    ]


def test_detection_buckets_count_found_and_answered_boxes() -> None:
    # A 100x100 image with a large square (found) and a small circle (missed), plus one
    # false alarm of small size and one box of the wrong class on nothing else.
    gt = np.asarray([[0, 0, 80, 80], [85, 85, 95, 95]], np.float64)
    im = ImageDetections(
        gt_boxes=gt,
        gt_labels=np.asarray([1, 0]),
        boxes=np.asarray([[1, 1, 80, 80], [40, 85, 50, 95], [0, 0, 5, 5]], np.float64),
        scores=np.asarray([0.9, 0.8, 0.1]),  # the last one is below the served threshold
        labels=np.asarray([1, 2, 0]),
    )
    style = {
        "background": "texture",
        "blur": 0.0,
        "noise": 0.0,
        "jpeg": 0,
        "shapes": [_attrs(0.8, "size>=70%"), _attrs(0.1, "size<15%", "outline")],
    }
    labels = ["circle", "square", "triangle"]
    buckets, failures = _detection_buckets([im], [style], [(100, 100)], 0.4, 100, labels)
    assert buckets["size>=70%"] == {"recall": 1.0, "count": 1.0, "precision": 1.0}
    assert buckets["size<15%"] == {"recall": 0.0, "count": 1.0, "precision": 0.0}
    assert buckets["outline"] == {"recall": 0.0, "count": 1.0}
    scene = buckets["background=texture"]
    assert scene["precision"] == 0.5 and scene["recall"] == 0.5 and scene["count"] == 1.0
    assert failures == [
        "1 circles missed (no box of any class on them)",
        "1 boxes on no shape (false alarms)",
    ]


def test_weakest_buckets_and_card_notes() -> None:
    buckets = {
        "size<15%": {"accuracy": 0.9, "count": 50.0},
        "size>=70%": {"accuracy": 0.8, "count": 40.0},
        "cut": {"accuracy": 0.5, "count": 4.0},  # too few to rank
        "jpeg": {"accuracy": 0.95, "count": 100.0},
    }
    assert [b["bucket"] for b in weakest_buckets(buckets, "accuracy", n=2)] == [
        "size>=70%",
        "size<15%",
    ]
    notes = card_evaluation_notes("classification", buckets, ["circle answered as triangle: 3"])
    assert notes["weakest_buckets"][0] == {"bucket": "size>=70%", "accuracy": 0.8, "count": 40}
    assert notes["failure_modes"] == ["circle answered as triangle: 3"]
    assert notes["buckets"]["cut"]["count"] == 4
    assert default_description("classification", ["cat", "dog"]) == (
        "Names the one object an image shows as one of 2 classes: cat, dog."
    )
    assert "wide" in training_domain(
        {"tool": "care-serve generate", "distribution": "wide"}, "d", 9
    )
    assert "not generated" in training_domain(None, "data/pets", 9)
