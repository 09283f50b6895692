"""Peer: FastAPI + the eager PyTorch model (torch's default threads, no batching).

Run: ``PEER_CHECKPOINT=ckpt.pth.tar PEER_ARCH=care_s0 PEER_PACKAGE=store/care_s0/1
uvicorn benchmarks.peers.torch_server:app``.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from fastapi import Body, FastAPI

from benchmarks.peers.common import Package, top5
from care_serve.models import create_model

package = Package(os.environ["PEER_PACKAGE"])
model = create_model(os.environ.get("PEER_ARCH", "care_s0"), os.environ["PEER_CHECKPOINT"])
app = FastAPI()


@app.post("/predict")
def predict(data: bytes = Body(..., media_type="image/jpeg")) -> dict[str, Any]:
    x = torch.from_numpy(package.to_input(data)[None])
    with torch.inference_mode():
        logits = model(x)
    return top5(logits.numpy(), package.labels)
