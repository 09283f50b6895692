"""How each serving framework is started (in its own venv) and what its client sends.

Every framework serves the care-serve package's own fused ``model.onnx`` through
``frameworks.pipeline`` (settings in ``peer.json`` in the peer's work directory), so
only the serving layer differs. Each request carries the JPEG as the framework's
docs show: raw body (Ray Serve, FastAPI), a multipart file (BentoML, LitServe),
base64 in JSON (KServe v1, MLServer V2), or binary tensor data (Triton's v2 binary
extension). The batching ones batch up to 8 requests and wait at most 5 ms.
"""

from __future__ import annotations

import base64
import json
import struct
import sys
from pathlib import Path

from benchmarks.peers.frameworks.envs import FRAMEWORK_REQUIREMENTS, ensure_env
from benchmarks.peers.load import RestTarget
from benchmarks.peers.prepare import Artefacts
from benchmarks.peers.workloads import write_pipeline_config
from benchmarks.processes import Launch, PortAllocator

__all__ = ["ENV_FAILURES", "FRAMEWORK_KEYS", "FRAMEWORK_LABELS", "multipart", "start_framework"]

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent / "frameworks"
MODEL = "care"
BOUNDARY = "care-serve-peers-boundary"

FRAMEWORK_LABELS = {
    "kserve": "KServe ModelServer",
    "bentoml": "BentoML (adaptive batching)",
    "litserve": "LitServe (batch 8)",
    "ray-serve": "Ray Serve (@serve.batch)",
    "mlserver": "MLServer (adaptive batching)",
    "pytriton": "Triton via PyTriton (dynamic batching)",
}
FRAMEWORK_KEYS = tuple(FRAMEWORK_LABELS)
assert set(FRAMEWORK_KEYS) == set(FRAMEWORK_REQUIREMENTS)
ENV_FAILURES: dict[str, str] = {}  # framework -> why its venv could not be made (this run)


def multipart(field: str, jpeg: bytes) -> tuple[bytes, str]:
    """A form with one file field: the body and its content type."""
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{field}"; '
        'filename="image.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
    )
    body = head.encode() + jpeg + f"\r\n--{BOUNDARY}--\r\n".encode()
    return body, f"multipart/form-data; boundary={BOUNDARY}"


def triton_binary(jpeg: bytes) -> tuple[bytes, tuple[tuple[str, str], ...]]:
    """A v2 infer request with the image as binary tensor data (one BYTES element)."""
    element = struct.pack("<I", len(jpeg)) + jpeg
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "shape": [1, 1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(element)},
                }
            ],
            "outputs": [{"name": "result", "parameters": {"binary_data": False}}],
        }
    ).encode()
    return header + element, (("Inference-Header-Content-Length", str(len(header))),)


def start_framework(
    key: str,
    art: Artefacts,
    ports: PortAllocator,
    workdir: Path,
    jpeg: bytes,
    env: dict[str, str],
) -> tuple[Launch, RestTarget]:
    """Write the peer's settings, make sure its venv exists, and say how to start it."""
    if key in ENV_FAILURES:
        raise RuntimeError(f"its venv could not be made: {ENV_FAILURES[key]}")
    python = ensure_env(key)
    config = write_pipeline_config(art, art.package_dir / "model.onnx", workdir / "peer.json")
    port = ports.take()
    url = f"http://127.0.0.1:{port}"
    env = {**env, "PEER_CONFIG": str(config), "PEER_PORT": str(port)}
    bin_dir = python.parent
    if key == "kserve":
        payload = {"instances": [{"image": {"b64": base64.b64encode(jpeg).decode()}}]}
        target = RestTarget(
            url, f"/v1/models/{MODEL}:predict", "application/json", json.dumps(payload).encode()
        )
        return Launch([str(python), str(HERE / "kserve_server.py")], workdir, env), target
    if key == "bentoml":
        body, kind = multipart("images", jpeg)
        argv = [
            str(bin_dir / "bentoml"), "serve", "benchmarks.peers.frameworks.bentoml_service:Care",
            "--host", "127.0.0.1", "--port", str(port), "--working-dir", str(REPO),
        ]  # fmt: skip
        env["BENTOML_DO_NOT_TRACK"] = "True"
        return Launch(argv, workdir, env), RestTarget(url, "/predict", kind, body)
    if key == "litserve":
        body, kind = multipart("content", jpeg)
        argv = [str(python), str(HERE / "litserve_server.py")]
        return Launch(argv, workdir, env), RestTarget(url, "/predict", kind, body)
    if key == "ray-serve":
        # Ray's internal traffic on 127.0.0.1 instead of the machine's network address.
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        env["RAY_USAGE_STATS_ENABLED"] = "0"
        argv = [str(python), str(HERE / "ray_serve_app.py")]
        return Launch(argv, workdir, env), RestTarget(url, "/predict")
    if key == "mlserver":
        root = workdir / "mlserver"
        root.mkdir(exist_ok=True)
        settings = {
            "host": "127.0.0.1",
            "http_port": port,
            "grpc_port": ports.take(),
            "metrics_port": ports.take(),
            "debug": False,
        }
        model = {
            "name": MODEL,
            "implementation": "benchmarks.peers.frameworks.mlserver_model.CareModel",
            "max_batch_size": 8,
            "max_batch_time": 0.005,
        }
        (root / "settings.json").write_text(json.dumps(settings, indent=1) + "\n")
        (root / "model-settings.json").write_text(json.dumps(model, indent=1) + "\n")
        element = {
            "name": "image",
            "shape": [1],
            "datatype": "BYTES",
            "parameters": {"content_type": "base64"},
            "data": [base64.b64encode(jpeg).decode()],
        }
        target = RestTarget(
            url,
            f"/v2/models/{MODEL}/infer",
            "application/json",
            json.dumps({"inputs": [element]}).encode(),
        )
        return Launch([str(bin_dir / "mlserver"), "start", str(root)], workdir, env), target
    if key == "pytriton":
        body, headers = triton_binary(jpeg)
        env["PEER_GRPC_PORT"] = str(ports.take())
        env["PEER_METRICS_PORT"] = str(ports.take())
        # Triton's Python stub links the system's libpython: the one of the Python that
        # made the venv.
        env["LD_LIBRARY_PATH"] = str(Path(sys.base_prefix) / "lib")
        argv = [str(python), str(HERE / "pytriton_server.py")]
        target = RestTarget(
            url, f"/v2/models/{MODEL}/infer", "application/octet-stream", body, headers
        )
        return Launch(argv, workdir, env), target
    raise ValueError(f"unknown framework {key!r}")
