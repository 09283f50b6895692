"""The embedding task end to end: import a checkpoint as an embedding model, serve it over
REST, own gRPC and v2 (HTTP and gRPC, the stock tritonclient), and check every served
vector against the PyTorch reference ``forward_head(forward_features(x), pre_logits=True)``
on fresh random images (cosine similarity >= 0.9999)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import torch
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from PIL import Image

from care_serve.grpc_gen.care_serve.v1 import inference_pb2 as pb
from care_serve.grpc_gen.care_serve.v1 import inference_pb2_grpc as pb_grpc
from care_serve.imaging.decode import decode_image
from care_serve.imaging.preprocess import preprocess_image
from care_serve.models.embedding import CAREEmbedder
from care_serve.offline.importer import ImportOptions, import_checkpoint
from care_serve.server import BackgroundStack
from care_serve.store import ModelRepository
from tests.helpers.numerics import rel_error
from tests.helpers.stacks import serving_stack

SIZE = 64
COSINE = 0.9999


def fresh_png(seed: int, width: int = 97, height: int = 83) -> bytes:
    """A random smooth picture, never seen before (lossless, so decoding is exact)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    image = Image.fromarray(base).resize((width, height), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def cosine(a: Any, b: Any) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def embedding_store(
    tmp_path_factory: pytest.TempPathFactory, tiny_models: dict[int, tuple[Any, Path, Path]]
) -> tuple[Path, Any]:
    """``tiny-embed`` (fused ONNX) and ``tiny-embed-pt`` (the checkpoint, PyTorch backend)."""
    model, _, checkpoint = tiny_models[1]
    store = tmp_path_factory.mktemp("embedding_store")
    for name, fmt in (("tiny-embed", "onnx"), ("tiny-embed-pt", "pytorch")):
        import_checkpoint(
            ImportOptions(
                checkpoint=checkpoint,
                arch="care_tiny",
                name=name,
                task="embedding",
                model_store=store,
                format=fmt,  # type: ignore[arg-type]
                input_size=(SIZE, SIZE),
            )
        )
    return store, model


@pytest.fixture(scope="module")
def stack(embedding_store: tuple[Path, Any]) -> Iterator[BackgroundStack]:
    with serving_stack(embedding_store[0]) as running:
        yield running


def reference(model: Any, png: bytes, store: Path, normalize: bool = True) -> np.ndarray:
    """The PyTorch model's pre-logits for ``png``, preprocessed as the package says."""
    manifest = ModelRepository(store).package("tiny-embed").manifest
    decoded = decode_image(png, max_bytes=10**8, max_pixels=10**8)
    x, _ = preprocess_image(decoded.image, manifest, crop_only=True)  # the served default
    with torch.inference_mode():
        vector = CAREEmbedder(model).eval()(torch.from_numpy(x[None]))[0].double().numpy()
    return vector / np.linalg.norm(vector) if normalize else vector


def test_the_package_records_the_task_and_the_vector_length(
    embedding_store: tuple[Path, Any],
) -> None:
    store, model = embedding_store
    manifest = ModelRepository(store).package("tiny-embed").manifest
    assert (manifest.task, manifest.outputs) == ("embedding", ["embedding"])
    assert manifest.num_classes == model.num_features
    assert manifest.model_card.notes["rel_error"] < 1e-4


@pytest.mark.parametrize("model_name", ["tiny-embed", "tiny-embed-pt"])
def test_rest_vectors_match_the_pytorch_reference(
    stack: BackgroundStack, embedding_store: tuple[Path, Any], model_name: str
) -> None:
    store, model = embedding_store
    for seed in range(3):
        png = fresh_png(100 + seed)
        response = httpx.post(
            f"{stack.http_url}/embed", params={"model": model_name}, content=png, timeout=30
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["dim"] == len(body["embedding"]) == model.num_features
        assert body["normalized"] is True
        assert abs(np.linalg.norm(body["embedding"]) - 1.0) < 1e-5
        assert cosine(body["embedding"], reference(model, png, store)) >= COSINE
        assert rel_error(body["embedding"], reference(model, png, store)) < 1e-4
    raw = httpx.post(
        f"{stack.http_url}/embed",
        params={"model": model_name, "normalize": "false"},
        content=png,
        timeout=30,
    ).json()
    assert raw["normalized"] is False
    assert rel_error(raw["embedding"], reference(model, png, store, normalize=False)) < 1e-4


def test_own_grpc_embed_matches_the_reference(
    stack: BackgroundStack, embedding_store: tuple[Path, Any]
) -> None:
    store, model = embedding_store
    png = fresh_png(200)
    with grpc.insecure_channel(stack.grpc_target) as channel:
        stub = pb_grpc.InferenceServiceStub(channel)
        reply = stub.Embed(pb.EmbedRequest(model="tiny-embed", image=png), timeout=30)
        raw = stub.Embed(pb.EmbedRequest(image=png, normalize=False), timeout=30)
    assert (reply.model, reply.dim, reply.normalized) == ("tiny-embed", model.num_features, True)
    assert cosine(list(reply.embedding), reference(model, png, store)) >= COSINE
    assert raw.normalized is False
    assert rel_error(list(raw.embedding), reference(model, png, store, False)) < 1e-4


@pytest.mark.parametrize("kind", ["http", "grpc"])
def test_v2_embedding_output_matches_the_reference(
    stack: BackgroundStack, embedding_store: tuple[Path, Any], kind: str
) -> None:
    store, model = embedding_store
    pngs = [fresh_png(300), fresh_png(301, 50, 120)]
    mod: Any = thttp if kind == "http" else tgrpc
    target = stack.http_url.removeprefix("http://") if kind == "http" else stack.grpc_target
    client = mod.InferenceServerClient(target)
    metadata = client.get_model_metadata("tiny-embed")
    outputs = (
        metadata["outputs"]
        if kind == "http"
        else [
            {"name": o.name, "datatype": o.datatype, "shape": list(o.shape)}
            for o in metadata.outputs
        ]
    )
    assert outputs == [{"name": "embedding", "datatype": "FP32", "shape": [-1, model.num_features]}]
    image = mod.InferInput("image", [len(pngs)], "BYTES")
    image.set_data_from_numpy(np.array(pngs, dtype=object))
    result = client.infer("tiny-embed", [image], outputs=[mod.InferRequestedOutput("embedding")])
    vectors = result.as_numpy("embedding")
    assert vectors.shape == (2, model.num_features)
    for vector, png in zip(vectors, pngs, strict=True):
        assert cosine(vector, reference(model, png, store)) >= COSINE


def test_embed_is_listed_and_refuses_what_it_does_not_take(stack: BackgroundStack) -> None:
    tasks = httpx.get(f"{stack.http_url}/tasks").json()["tasks"]
    assert {"name": "embedding", "route": "embed"} in [
        {"name": t["name"], "route": t["route"]} for t in tasks
    ]
    png = fresh_png(400)
    wrong = httpx.post(f"{stack.http_url}/embed", params={"top_k": "3"}, content=png)
    assert wrong.status_code == 400 and "'top_k'" in wrong.json()["error"]["message"]
    bad = httpx.post(f"{stack.http_url}/embed", params={"normalize": "maybe"}, content=png)
    assert bad.status_code == 400 and "normalize" in bad.json()["error"]["message"]
    other_task = httpx.post(
        f"{stack.http_url}/classify", params={"model": "tiny-embed"}, content=png
    )
    assert other_task.status_code == 400
    assert "embedding model" in other_task.json()["error"]["message"]
    assert "/embed" in other_task.json()["error"]["message"]
