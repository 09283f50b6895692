"""Peer: Triton Inference Server through PyTriton, with Triton's dynamic batcher.

The infer function is PyTriton's ``@batch`` callable: a ``BYTES`` input ``image``
(one JPEG a row) in, one JSON string a row out; Triton batches up to 8 requests,
waiting at most 5 ms. HTTP, gRPC and metrics bind 127.0.0.1. Run (PyTriton's venv,
with ``LD_LIBRARY_PATH`` at the ``lib`` folder of the Python that made the venv, whose
libpython Triton's Python stub links): ``PEER_CONFIG=peer.json PEER_PORT=8000
PEER_GRPC_PORT=8001 PEER_METRICS_PORT=8002 python pytriton_server.py``.
"""

from __future__ import annotations

import json
import os

import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

from benchmarks.peers.frameworks.pipeline import Pipeline

pipeline = Pipeline.from_env()


@batch
def infer(image: np.ndarray) -> dict[str, np.ndarray]:
    answers = pipeline.predict([bytes(row[0]) for row in image])
    return {"result": np.array([[json.dumps(a).encode()] for a in answers], dtype=np.object_)}


def main() -> None:
    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=int(os.environ["PEER_PORT"]),
        grpc_address="127.0.0.1",
        grpc_port=int(os.environ["PEER_GRPC_PORT"]),
        metrics_address="127.0.0.1",
        metrics_port=int(os.environ["PEER_METRICS_PORT"]),
    )
    with Triton(config=config) as triton:
        triton.bind(
            model_name="care",
            infer_func=infer,
            inputs=[Tensor(name="image", dtype=bytes, shape=(1,))],
            outputs=[Tensor(name="result", dtype=bytes, shape=(1,))],
            config=ModelConfig(
                max_batch_size=8,
                batcher=DynamicBatcher(max_queue_delay_microseconds=5000),
            ),
        )
        triton.serve()


if __name__ == "__main__":
    main()
