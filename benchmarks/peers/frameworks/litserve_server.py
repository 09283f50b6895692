"""Peer: a LitServe ``LitAPI`` batching up to 8 images (5 ms batch timeout).

As LitServe's image examples show, the client uploads the JPEG as the multipart
file field ``content`` (LitServe parses forms with python-multipart) and
``decode_request`` opens it with PIL; ``predict`` gets the batch. Run (LitServe's
venv): ``PEER_CONFIG=peer.json PEER_PORT=8000 python litserve_server.py``.
"""

import os
from typing import Any

import litserve as ls
from fastapi import Request
from PIL import Image

from benchmarks.peers.frameworks.pipeline import Pipeline


class CareAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.pipeline = Pipeline.from_env()

    def decode_request(self, request: Request) -> Image.Image:
        # LitServe reads this annotation: for ``Request`` it passes the parsed form.
        return Image.open(request["content"].file)

    def predict(self, images: list[Image.Image]) -> list[dict[str, Any]]:
        return self.pipeline.predict(images)

    def encode_response(self, output: dict[str, Any]) -> dict[str, Any]:
        return output


if __name__ == "__main__":
    api = CareAPI(max_batch_size=8, batch_timeout=0.005)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1, timeout=120)
    server.run(host="127.0.0.1", port=int(os.environ["PEER_PORT"]), generate_client_file=False)
