"""The servers compared: how each one is started and how it is called.

All listen on 127.0.0.1 only (checked before any load: ``benchmarks.peers.sockets``).
The FastAPI peers run under uvicorn's defaults (``--loop auto --http auto``: uvloop and
httptools when installed) without access logs; TorchServe runs its defaults plus tuned
settings (eager, 1 worker, batch 8, 5 ms delay). The serving frameworks (KServe,
BentoML, LitServe, Ray Serve, MLServer, PyTriton) run in venvs of their own
(``framework_peers``). care-serve runs with 2 intra-op threads, like the peers.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.peers.framework_peers import FRAMEWORK_KEYS, FRAMEWORK_LABELS, start_framework
from benchmarks.peers.load import GrpcTarget, RestTarget, encode_torchserve_request
from benchmarks.peers.prepare import (
    TORCHSERVE_MODEL,
    Artefacts,
    plain_onnx,
    torchserve_archive,
)
from benchmarks.peers.workloads import DETECTOR, write_pipeline_config
from benchmarks.processes import Launch, PortAllocator

__all__ = ["DEFAULT_PEERS", "FRAMEWORK_SUITE", "PEER_KEYS", "Peer", "Started", "make_peer"]

REPO = Path(__file__).resolve().parents[2]
DEFAULT_PEERS = ("care-serve", "onnx-fastapi", "torch-fastapi", "torchserve")
PEER_KEYS = (*DEFAULT_PEERS, "onnx-fastapi-fused", *FRAMEWORK_KEYS)
# care-serve against what a user would otherwise pick, all on the same fused ONNX file.
FRAMEWORK_SUITE = ("care-serve", "onnx-fastapi-fused", "onnx-fastapi", *FRAMEWORK_KEYS)


@dataclass
class Started:
    """A launch plus how to reach the server it starts."""

    launch: Launch
    rest: RestTarget
    grpc: GrpcTarget | None = None
    startup_timeout_s: float = 180.0
    metrics_url: str | None = None  # care-serve's /metrics, for the stage account


@dataclass
class Peer:
    """One server under test (``env`` adds environment variables, for A/B variants)."""

    key: str
    label: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def protocols(self) -> tuple[str, ...]:
        return ("rest", "grpc") if self.key in ("care-serve", "torchserve") else ("rest",)

    def start(self, art: Artefacts, ports: PortAllocator, workdir: Path, jpeg: bytes) -> Started:
        """Prepare this peer's files in ``workdir`` and say how to start it."""
        env = {"PYTHONPATH": str(REPO), "PEER_ARCH": art.arch}
        if self.key == "care-serve":
            env["CARE_SERVE_INTRA_OP_THREADS"] = "2"
            return _care_serve(art, ports, workdir, jpeg, {**env, **self.env})
        env.update(self.env)
        if self.key in FRAMEWORK_KEYS:
            launch, rest = start_framework(self.key, art, ports, workdir, jpeg, env)
            return Started(launch, rest, startup_timeout_s=300.0)
        if art.model_name == DETECTOR and self.key != "onnx-fastapi-fused":
            raise RuntimeError(
                "serves the classifier only (the detector's package has its fused ONNX file, "
                "no checkpoint to export a plain one from)"
            )
        if self.key == "torchserve":
            return _torchserve(art, ports, workdir, jpeg, env)
        port = ports.take()
        env["PEER_PACKAGE"] = str(art.package_dir)
        if self.key in ("onnx-fastapi", "onnx-fastapi-fused"):
            onnx = (
                art.package_dir / "model.onnx"
                if self.key == "onnx-fastapi-fused"
                else plain_onnx(art, workdir.parent)
            )
            env["PEER_CONFIG"] = str(write_pipeline_config(art, onnx, workdir / "peer.json"))
            app = "benchmarks.peers.onnx_server:app"
        else:
            env["PEER_CHECKPOINT"] = str(art.checkpoint)
            app = "benchmarks.peers.torch_server:app"
        argv = [
            sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
            "--log-level", "warning", "--no-access-log",
        ]  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        return Started(Launch(argv, REPO, env), RestTarget(url, "/predict"))


def _care_serve(
    art: Artefacts, ports: PortAllocator, workdir: Path, jpeg: bytes, env: dict[str, str]
) -> Started:
    from care_serve.grpc_gen.care_serve.v1 import inference_pb2 as pb

    http, grpc_port = ports.take(), ports.take()
    detect = art.model_name == DETECTOR
    argv = [
        sys.executable, "-m", "care_serve", "serve", "--model-store", str(art.store),
        "--models", art.model_name, "--host", "127.0.0.1", "--http-port", str(http),
        "--grpc-port", str(grpc_port), "--log-level", "warning",
    ]  # fmt: skip
    if detect:
        request = pb.DetectRequest(model=art.model_name, image=jpeg).SerializeToString()
        path, method = f"/detect?model={art.model_name}", "Detect"
    else:
        request = pb.ClassifyRequest(model=art.model_name, image=jpeg, top_k=5).SerializeToString()
        path, method = f"/classify?model={art.model_name}&top_k=5", "Classify"
    return Started(
        Launch(argv, workdir, env),
        RestTarget(f"http://127.0.0.1:{http}", path),
        GrpcTarget(f"127.0.0.1:{grpc_port}", f"/care_serve.v1.InferenceService/{method}", request),
        metrics_url=f"http://127.0.0.1:{http}/metrics",
    )


def _torchserve(
    art: Artefacts, ports: PortAllocator, workdir: Path, jpeg: bytes, env: dict[str, str]
) -> Started:
    cli = Path(sys.executable).parent / "torchserve"
    if not cli.is_file():
        raise RuntimeError("torchserve is not installed: pip install -e '.[peers]'")
    store = torchserve_archive(art, workdir)
    inference, management, metrics, grpc_inf, grpc_mgmt, worker = (ports.take() for _ in range(6))
    models = {
        TORCHSERVE_MODEL: {
            "1.0": {
                "defaultVersion": True,
                "marName": f"{TORCHSERVE_MODEL}.mar",
                "minWorkers": 1,
                "maxWorkers": 1,
                "batchSize": 8,
                "maxBatchDelay": 5,
                "responseTimeout": 120,
            }
        }
    }
    config = workdir / "config.properties"
    config.write_text(
        "\n".join(
            [
                f"inference_address=http://127.0.0.1:{inference}",
                f"management_address=http://127.0.0.1:{management}",
                f"metrics_address=http://127.0.0.1:{metrics}",
                "grpc_inference_address=127.0.0.1",
                "grpc_management_address=127.0.0.1",
                f"grpc_inference_port={grpc_inf}",
                f"grpc_management_port={grpc_mgmt}",
                f"initial_worker_port={worker}",
                "disable_token_authorization=true",
                "install_py_dep_per_model=false",
                f"model_store={store}",
                f"load_models={TORCHSERVE_MODEL}.mar",
                f"models={json.dumps(models)}",
            ]
        )
        + "\n"
    )
    tmp = workdir / "tmp"
    tmp.mkdir(exist_ok=True)
    # TorchServe keeps its pid file and worker sockets in the temp directory: a private one.
    env = {**env, "TEMP": str(tmp), "TMPDIR": str(tmp)}
    argv = [
        str(cli), "--start", "--foreground", "--ncs", "--disable-token-auth",
        "--model-store", str(store), "--ts-config", str(config),
    ]  # fmt: skip
    request = encode_torchserve_request(TORCHSERVE_MODEL, jpeg)
    return Started(
        Launch(argv, workdir, env),
        RestTarget(f"http://127.0.0.1:{inference}", f"/predictions/{TORCHSERVE_MODEL}"),
        GrpcTarget(
            f"127.0.0.1:{grpc_inf}",
            "/org.pytorch.serve.grpc.inference.InferenceAPIsService/Predictions",
            request,
        ),
        startup_timeout_s=300.0,
    )


def make_peer(key: str, variant: str = "", env: dict[str, str] | None = None) -> Peer:
    """A peer by key; ``variant`` names an A/B variant started with extra ``env``."""
    labels = {
        "care-serve": "care-serve",
        "onnx-fastapi": "FastAPI + onnxruntime (plain export)",
        "onnx-fastapi-fused": "FastAPI + onnxruntime (fused file)",
        **FRAMEWORK_LABELS,
        "torch-fastapi": "FastAPI + eager torch",
        "torchserve": "TorchServe (eager, batch 8)",
    }
    if key not in labels:
        raise ValueError(f"unknown peer {key!r}; choose from {', '.join(PEER_KEYS)}")
    label = labels[key] + (f" [{variant}]" if variant else "")
    return Peer(key, label, dict(env or {}))
