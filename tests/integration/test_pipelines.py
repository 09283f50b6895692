"""POST /pipelines/{name}: the bundled detector, then the classifier on each crop."""

from __future__ import annotations

import httpx
import pytest

from care_serve.server import BackgroundStack
from tests.helpers.scenes import SCENES, ShapeScene, box_iou

PIPELINE = "shapes-detect-classify"
TRIO = next(s for s in SCENES if s.name == "trio")


def _post(
    stack: BackgroundStack, data: bytes, name: str = PIPELINE, **headers: str
) -> httpx.Response:
    return httpx.post(
        f"{stack.http_url}/pipelines/{name}",
        content=data,
        headers={"Content-Type": "image/jpeg", **headers},
        timeout=30,
    )


def _metric(stack: BackgroundStack, name: str, **labels: str) -> float:
    return stack.stack.registry.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize("scene", SCENES, ids=[s.name for s in SCENES])
def test_each_object_is_found_and_named_by_the_classifier(
    served: BackgroundStack, scene: ShapeScene
) -> None:
    answer = _post(served, scene.jpeg())
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["pipeline"] == PIPELINE
    assert (body["image_width"], body["image_height"]) == (640, 480)
    found = body["detections"]
    assert sorted(d["label"] for d in found) == scene.labels
    for expected in scene.objects:
        match = max(found, key=lambda d: box_iou(d["box"], expected.box))
        assert box_iou(match["box"], expected.box) > 0.7
        classification = match["classification"]
        assert classification["model"] == "shapes-classifier"
        assert classification["predictions"][0]["label"] == expected.label
        assert len(classification["predictions"]) == 3  # the pipeline's top_k
    assert set(body["timings_ms"]) >= {"decode", "detect", "total"}
    if found:
        assert {"crop", "classify"} <= set(body["timings_ms"])


def test_the_crops_of_an_image_are_one_classifier_request_in_one_batch(
    served: BackgroundStack,
) -> None:
    labels = {"model": "shapes-classifier", "version": "1"}
    requests = dict(labels, protocol="rest", key="", outcome="success")
    before_requests = _metric(served, "care_inference_requests_total", **requests)
    before_crops = _metric(served, "care_pipeline_crops_sum", pipeline=PIPELINE)
    before_batches = _metric(served, "care_inference_batch_size_count", **labels)
    before_images = _metric(served, "care_inference_batch_size_sum", **labels)
    assert _post(served, TRIO.jpeg()).status_code == 200
    assert _metric(served, "care_pipeline_crops_sum", pipeline=PIPELINE) - before_crops == 3
    assert _metric(served, "care_inference_requests_total", **requests) - before_requests == 1
    assert _metric(served, "care_inference_batch_size_count", **labels) - before_batches == 1
    assert _metric(served, "care_inference_batch_size_sum", **labels) - before_images == 3
    steps = {"pipeline": PIPELINE, "step": "classify"}
    assert _metric(served, "care_pipeline_step_duration_seconds_count", **steps) >= 1


def test_pipelines_are_listed_with_their_steps(served: BackgroundStack) -> None:
    listed = httpx.get(f"{served.http_url}/pipelines").json()["pipelines"]
    (pipeline,) = [p for p in listed if p["name"] == PIPELINE]
    assert pipeline["ready"] is True and pipeline["problem"] is None
    assert [(s["name"], s["model"], s["task"]) for s in pipeline["steps"]] == [
        ("detect", "shapes-detector", "detection"),
        ("classify", "shapes-classifier", "classification"),
    ]
    assert httpx.get(f"{served.http_url}/pipelines/{PIPELINE}").json() == pipeline


def test_an_unknown_pipeline_is_a_404_naming_the_known_ones(served: BackgroundStack) -> None:
    answer = _post(served, TRIO.jpeg(), name="nope")
    assert answer.status_code == 404
    assert PIPELINE in answer.json()["error"]["message"]
    assert httpx.get(f"{served.http_url}/pipelines/nope").status_code == 404


def test_a_bad_image_is_a_400_saying_what_is_accepted(served: BackgroundStack) -> None:
    answer = _post(served, b"not an image")
    assert answer.status_code == 400
    assert "accepted" in answer.json()["error"]["message"]


def test_the_deadline_covers_the_whole_pipeline(served: BackgroundStack) -> None:
    answer = _post(served, TRIO.jpeg(), **{"X-Request-Timeout-Ms": "1"})
    assert answer.status_code == 504, answer.text
    assert "deadline" in answer.json()["error"]["message"]


def test_a_step_whose_model_serves_another_task_is_a_503_naming_it(
    served: BackgroundStack,
) -> None:
    runner = served.stack.data_plane.pipelines
    config = served.stack.manager.config
    spec = config.pipelines[PIPELINE]
    broken = spec.model_copy(
        update={"steps": (spec.steps[0].model_copy(update={"model": "shapes-segmenter"}),)}
    )
    served.stack.manager.config = config.model_copy(
        update={"pipelines": {**config.pipelines, "broken": broken}}
    )
    try:
        assert runner.describe("broken").ready is False
        answer = _post(served, TRIO.jpeg(), name="broken")
        assert answer.status_code == 503
        message = answer.json()["error"]["message"]
        assert "needs a detection model" in message and "segmentation" in message
    finally:
        served.stack.manager.config = config
