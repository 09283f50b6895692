"""Concurrent batches on a real model: under load the one-thread session runs batches side by
side, and every client gets the answer it would get alone."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np

from care_serve.serving.compute import ModelCompute
from tests.helpers.numerics import rel_error
from tests.helpers.packages import jpeg_bytes
from tests.helpers.stacks import serving_stack


def _scores(reply: httpx.Response) -> np.ndarray:
    """The top-5 probabilities, placed by class id."""
    assert reply.status_code == 200, reply.text
    scores = np.zeros(1000)
    for p in reply.json()["predictions"]:
        scores[p["class_id"]] = p["probability"]
    return scores


def test_busy_batches_run_side_by_side_with_the_answers_of_lone_ones() -> None:
    images = [jpeg_bytes(160, 120, seed=s) for s in range(12)]
    with serving_stack(
        models=["shapes-classifier"], intra_op_threads=2, concurrent_batches=0
    ) as stack:
        loaded = stack.stack.manager.representative("shapes-classifier")
        assert loaded is not None and isinstance(loaded.backend, ModelCompute)
        compute = loaded.backend
        assert (compute.slots, compute.narrow_threads) == (2, 1)
        narrow = compute.parts()[1]
        calls = {"narrow": 0}
        run = narrow.run

        def counted(batch: np.ndarray) -> dict[str, np.ndarray]:
            calls["narrow"] += 1
            return run(batch)

        narrow.run = counted  # type: ignore[method-assign]
        url = f"{stack.http_url}/classify?top_k=5"
        with httpx.Client(timeout=30) as client:
            alone = [_scores(client.post(url, content=image)) for image in images]
        assert calls["narrow"] == 0  # one client after another: each request alone, wide
        with ThreadPoolExecutor(8) as pool, httpx.Client(timeout=30) as client:
            for _ in range(3):
                busy = list(pool.map(lambda i: _scores(client.post(url, content=i)), images))
                for got, want in zip(busy, alone, strict=True):
                    assert rel_error(got, want) < 1e-5
        assert calls["narrow"] > 0  # overlapping requests took the one-thread session
        assert stack.stack.manager._images_in_flight == 0
