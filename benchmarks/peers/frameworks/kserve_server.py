"""Peer: KServe's Python ModelServer with a custom ``Model`` (the v1 protocol, no batching).

As KServe's custom-model docs show: the image arrives base64-encoded in
``{"instances": [{"image": {"b64": ...}}]}`` and ``predict`` is a plain method.
KServe's REST server binds 0.0.0.0 with no option to change it, so the server here
sets its uvicorn config's host to 127.0.0.1 before it starts; its gRPC server
(``[::]``) is off. Run (KServe's venv): ``PEER_CONFIG=peer.json PEER_PORT=8080 python
kserve_server.py``.
"""

from __future__ import annotations

import base64
import os
from typing import Any

from kserve import Model, ModelServer

from benchmarks.peers.frameworks.pipeline import Pipeline


class CareModel(Model):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.pipeline = Pipeline.from_env()
        self.ready = True

    def predict(
        self, payload: dict[str, Any], headers: dict[str, str] | None = None
    ) -> dict[str, Any]:
        images = [base64.b64decode(item["image"]["b64"]) for item in payload["instances"]]
        return {"predictions": self.pipeline.predict(images)}


class LoopbackModelServer(ModelServer):
    """The ModelServer with its REST server on 127.0.0.1 instead of 0.0.0.0."""

    def setup_event_loop(self) -> None:
        if self._rest_server is not None:
            self._rest_server.config.host = "127.0.0.1"
        super().setup_event_loop()


if __name__ == "__main__":
    server = LoopbackModelServer(
        http_port=int(os.environ["PEER_PORT"]), enable_grpc=False, workers=1
    )
    server.start([CareModel("care")])
