"""Peer: an MLServer custom runtime (``MLModel``) with MLServer's adaptive batching.

The image travels as a V2 ``BYTES`` input, base64 in the JSON body (MLServer's
``Base64Codec``); adaptive batching (``max_batch_size`` 8, ``max_batch_time`` 5 ms in
``model-settings.json``) merges requests along the first dimension, and the answers
go back as one JSON string each. The harness writes ``settings.json`` (host
127.0.0.1 for REST, gRPC and metrics) and ``model-settings.json``; run (MLServer's
venv): ``PEER_CONFIG=peer.json mlserver start DIR``.
"""

from __future__ import annotations

import json

from mlserver import MLModel
from mlserver.codecs import Base64Codec, StringCodec
from mlserver.types import InferenceRequest, InferenceResponse

from benchmarks.peers.frameworks.pipeline import Pipeline


class CareModel(MLModel):
    async def load(self) -> bool:
        self.pipeline = Pipeline.from_env()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        images = Base64Codec.decode_input(payload.inputs[0])
        answers = [json.dumps(answer) for answer in self.pipeline.predict(images)]
        return InferenceResponse(
            model_name=self.name, outputs=[StringCodec.encode_output("result", answers)]
        )
