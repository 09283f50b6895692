"""Peer: the minimal FastAPI + onnxruntime server a user writes in 30 lines.

A plain (unfused) ONNX export, onnxruntime's default session options, one
``session.run`` per request in FastAPI's thread pool, no batching.
Run: ``PEER_ONNX=plain.onnx PEER_PACKAGE=store/care_s0/1 uvicorn benchmarks.peers.onnx_server:app``.
"""

from __future__ import annotations

import os
from typing import Any

import onnxruntime as ort
from fastapi import Body, FastAPI

from benchmarks.peers.common import Package, top5

package = Package(os.environ["PEER_PACKAGE"])
session = ort.InferenceSession(os.environ["PEER_ONNX"], providers=["CPUExecutionProvider"])
input_name = session.get_inputs()[0].name
app = FastAPI()


@app.post("/predict")
def predict(data: bytes = Body(..., media_type="image/jpeg")) -> dict[str, Any]:
    x = package.to_input(data)[None]
    logits = session.run(None, {input_name: x})[0]
    return top5(logits, package.labels)
