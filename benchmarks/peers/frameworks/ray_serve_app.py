"""Peer: Ray Serve, one deployment whose ``@serve.batch`` method runs batches of up to 8.

Run (Ray's venv): ``PEER_CONFIG=peer.json PEER_PORT=8000 python ray_serve_app.py``. Ray is
kept on loopback: ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (set by the harness) makes Ray
use 127.0.0.1 as this node's address for its internal traffic (GCS, raylet, workers),
the dashboard is off, and Serve's HTTP proxy binds 127.0.0.1.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import ray
from ray import serve
from starlette.requests import Request

from benchmarks.peers.frameworks.pipeline import Pipeline


@serve.deployment(max_ongoing_requests=64)
class Care:
    def __init__(self) -> None:
        self.pipeline = Pipeline.from_env()

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def predict(self, images: list[bytes]) -> list[dict[str, Any]]:
        return self.pipeline.predict(images)

    async def __call__(self, request: Request) -> dict[str, Any]:
        return await self.predict(await request.body())


def main() -> None:
    ray.init(
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        num_cpus=os.cpu_count(),
        runtime_env={"env_vars": {"PEER_CONFIG": os.environ["PEER_CONFIG"]}},
    )
    serve.start(http_options={"host": "127.0.0.1", "port": int(os.environ["PEER_PORT"])})
    serve.run(Care.bind(), route_prefix="/predict")  # type: ignore[attr-defined]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
