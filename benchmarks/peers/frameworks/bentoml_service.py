"""Peer: a BentoML service with adaptive batching (up to 8 images, as BentoML's docs show).

The client posts the JPEG as a multipart file field ``images``; BentoML opens it
as a PIL image and batches requests into one ``predict`` call. Run (BentoML's venv):
``PEER_CONFIG=peer.json bentoml serve benchmarks.peers.frameworks.bentoml_service:Care
--host 127.0.0.1 --port 3000``.
"""

from __future__ import annotations

from typing import Any

import bentoml
from PIL.Image import Image

from benchmarks.peers.frameworks.pipeline import Pipeline


@bentoml.service(workers=1, traffic={"timeout": 120})
class Care:
    def __init__(self) -> None:
        self.pipeline = Pipeline.from_env()

    @bentoml.api(batchable=True, max_batch_size=8, max_latency_ms=60_000)
    def predict(self, images: list[Image]) -> list[dict[str, Any]]:
        return self.pipeline.predict(images)
