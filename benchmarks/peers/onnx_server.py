"""Peer: the minimal FastAPI + onnxruntime server a user writes in 30 lines.

One ``session.run`` per request in FastAPI's thread pool, no batching, on the ONNX
file named in ``PEER_CONFIG`` (``frameworks.pipeline``'s settings, 2 intra-op
threads): care-serve's own fused file (peer ``onnx-fastapi-fused``) or a plain,
unfused export of the same model (``onnx-fastapi``). Run: ``PEER_CONFIG=peer.json
uvicorn benchmarks.peers.onnx_server:app``.
"""

from __future__ import annotations

from typing import Any

from fastapi import Body, FastAPI

from benchmarks.peers.frameworks.pipeline import Pipeline

pipeline = Pipeline.from_env()
app = FastAPI()


@app.post("/predict")
def predict(data: bytes = Body(..., media_type="image/jpeg")) -> dict[str, Any]:
    return pipeline.predict_one(data)
