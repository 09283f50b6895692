"""Peer: the TorchServe handler (eager PyTorch; TorchServe batches, this runs the batch).

TorchServe calls ``handle(data, context)`` with up to ``batchSize`` requests; each
row holds the raw image under ``data`` or ``body`` (REST body or gRPC input). The
model is built from the checkpoint in the archive; ``manifest.json`` and
``labels.txt`` of the imported care-serve package come as extra files.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import torch

from benchmarks.peers.common import Package, top5
from care_serve.models import create_model

_state: dict[str, Any] = {}


def _initialize(context: Any) -> None:
    model_dir = context.system_properties["model_dir"]
    serialized = context.manifest["model"]["serializedFile"]
    _state["package"] = Package(model_dir)
    _state["model"] = create_model(
        os.environ.get("PEER_ARCH", "care_s0"), os.path.join(model_dir, serialized)
    )


def handle(data: list[dict[str, Any]] | None, context: Any) -> list[str] | None:
    """TorchServe's entry point: one JSON answer per request of the batch."""
    if "model" not in _state:
        _initialize(context)
    if data is None:  # TorchServe's start-up probe
        return None
    package: Package = _state["package"]
    images = []
    for row in data:
        raw = row.get("data") or row.get("body") or b""
        if isinstance(raw, str):
            raw = raw.encode("latin-1")
        images.append(package.to_input(bytes(raw)))
    with torch.inference_mode():
        logits = _state["model"](torch.from_numpy(np.stack(images))).numpy()
    return [json.dumps(top5(row, package.labels)) for row in logits]
