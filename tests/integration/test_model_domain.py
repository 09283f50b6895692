"""What a model knows: its domain in the listing, served parameters, and uncertain answers.

The bundled classifier carries a calibrated ``min_logsumexp``; real photos (examples/photos,
nothing like its synthetic shapes) are answered ``uncertain`` on REST and gRPC, a shape is not.
"""

from __future__ import annotations

import grpc
import httpx
import pytest

from care_serve.grpc_gen.care_serve.v1 import inference_pb2 as pb
from care_serve.grpc_gen.care_serve.v1 import inference_pb2_grpc as pb_grpc
from care_serve.server import BackgroundStack
from tests.helpers.paths import ROOT

PHOTOS = sorted((ROOT / "examples" / "photos").glob("*.jpg"))


def test_there_are_real_photos_to_try() -> None:
    assert {p.name for p in PHOTOS} >= {"cat.jpg", "astronaut.jpg", "coffee.jpg"}


@pytest.mark.parametrize("photo", PHOTOS, ids=lambda p: p.name)
def test_a_real_photo_is_answered_uncertain(served: BackgroundStack, photo: object) -> None:
    data = photo.read_bytes()  # type: ignore[attr-defined]
    rest = httpx.post(f"{served.http_url}/classify", content=data, timeout=30).json()
    assert rest["uncertain"] is True
    with grpc.insecure_channel(served.grpc_target) as channel:
        reply = pb_grpc.InferenceServiceStub(channel).Classify(pb.ClassifyRequest(image=data))
    assert reply.uncertain is True


def test_a_shape_is_answered_with_confidence(served: BackgroundStack) -> None:
    data = (ROOT / "examples" / "shape.png").read_bytes()
    rest = httpx.post(f"{served.http_url}/classify", content=data, timeout=30).json()
    assert rest["uncertain"] is False and rest["predictions"][0]["label"] == "triangle"


def test_the_listing_says_what_each_model_knows_and_serves(served: BackgroundStack) -> None:
    models = {m["name"]: m for m in httpx.get(f"{served.http_url}/models").json()["models"]}
    for model in models.values():
        assert "synthetic shapes" in model["model_card"]["domain"]
    classifier = models["shapes-classifier"]["parameters"]
    assert classifier["top_k"] == {"default": 3, "minimum": 1, "maximum": 3}
    detector = models["shapes-detector"]["parameters"]
    assert detector["score_threshold"]["default"] == 0.5
    assert detector["max_detections"]["maximum"] >= detector["max_detections"]["default"]
    assert models["shapes-segmenter"]["parameters"] == {}
