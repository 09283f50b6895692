"""Probe a running care-serve (an image, a pod, a local server) and print what it answered.

    .venv/bin/python scripts/probe_server.py --http http://127.0.0.1:18300 --grpc 127.0.0.1:18301

Checks, each strictly: REST /health/live and /health/ready, /classify, /detect and /segment on a
generated image (model fields, result shapes), gRPC health (SERVING) and Classify, and the Open
Inference Protocol v2 (health, model metadata, an infer whose inputs follow the metadata) -- or
reports "v2: not served" when /v2/health/live answers 404. Prints one line per check and, with
--json FILE, writes {"latency_ms": {endpoint: median}, "v2": "..."} for the caller's table.
Exit status 0 only if every check passed.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import statistics
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from care_serve.grpc_gen.care_serve.v1 import inference_pb2, inference_pb2_grpc

V2_DTYPES = {"FP32", "FP16", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "BOOL", "BYTES"}


class ProbeError(Exception):
    """A check failed: the message says what was expected and what came back."""


def sample_png(width: int = 96, height: int = 72) -> bytes:
    """A small PNG with one filled circle (the bundled models are trained on shapes)."""
    image = Image.new("RGB", (width, height), (40, 40, 40))
    ImageDraw.Draw(image).ellipse((20, 12, 68, 60), fill=(220, 60, 60))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def http(method: str, url: str, body: bytes | None = None, ctype: str | None = None,
         timeout: float = 60.0) -> tuple[int, bytes]:  # fmt: skip
    """One HTTP request: (status, body); HTTP errors are returned, not raised."""
    request = urllib.request.Request(url, data=body, method=method)
    if ctype:
        request.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def expect_json(method: str, url: str, body: bytes | None = None,
                ctype: str | None = None) -> Any:  # fmt: skip
    status, data = http(method, url, body, ctype)
    if status != 200:
        raise ProbeError(f"{method} {url}: HTTP {status}, expected 200: {data[:300]!r}")
    try:
        return json.loads(data)
    except ValueError:
        raise ProbeError(f"{method} {url}: not JSON: {data[:200]!r}") from None


def check(condition: bool, message: str) -> None:
    if not condition:
        raise ProbeError(message)


def timed(fn: Callable[[], Any], repeat: int) -> tuple[Any, float]:
    """Run ``fn`` once untimed (connections), then ``repeat`` times: (result, median ms)."""
    result = fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return result, statistics.median(times)


class Prober:
    def __init__(self, http_base: str, grpc_target: str, repeat: int) -> None:
        self.base = http_base.rstrip("/")
        self.grpc_target = grpc_target
        self.repeat = repeat
        self.image = sample_png()
        self.latency_ms: dict[str, float] = {}
        self.v2 = "not checked"

    # --- REST -------------------------------------------------------------------------------
    def health(self) -> str:
        for path in ("/health/live", "/health/ready"):
            status, body = http("GET", self.base + path)
            check(status == 200, f"GET {path}: HTTP {status}, expected 200: {body[:200]!r}")
        return "live and ready"

    def classify(self) -> str:
        url = self.base + "/classify?top_k=3"
        out, ms = timed(lambda: expect_json("POST", url, self.image, "image/png"), self.repeat)
        self.latency_ms["REST /classify"] = ms
        preds = out["predictions"]
        check(len(preds) == 3, f"/classify: {len(preds)} predictions, expected top_k=3")
        probs = [p["probability"] for p in preds]
        check(probs == sorted(probs, reverse=True), "/classify: predictions not sorted")
        check(all(0.0 <= p <= 1.0 for p in probs), f"/classify: probabilities {probs}")
        check((out["image_width"], out["image_height"]) == (96, 72), "/classify: image size")
        return f"{out['model']} v{out['version']}: {preds[0]['label']} {probs[0]:.3f}"

    def detect(self) -> str:
        url = self.base + "/detect"
        out, ms = timed(lambda: expect_json("POST", url, self.image, "image/png"), self.repeat)
        self.latency_ms["REST /detect"] = ms
        dets = out["detections"]
        check(isinstance(dets, list), "/detect: detections is not a list")
        check((out["image_width"], out["image_height"]) == (96, 72), "/detect: image size")
        return f"{out['model']} v{out['version']}: {len(dets)} detections"

    def segment(self) -> str:
        url = self.base + "/segment?format=json"
        out, ms = timed(lambda: expect_json("POST", url, self.image, "image/png"), self.repeat)
        self.latency_ms["REST /segment"] = ms
        mask = Image.open(io.BytesIO(base64.b64decode(out["mask_png"])))
        check(mask.size == (96, 72), f"/segment: mask is {mask.size}, expected (96, 72)")
        share = sum(s["share"] for s in out["class_shares"])
        check(abs(share - 1.0) < 1e-3, f"/segment: class shares sum to {share}")
        return f"{out['model']} v{out['version']}: {len(out['class_names'])} classes"

    def metrics(self) -> str:
        status, body = http("GET", self.base + "/metrics")
        check(status == 200, f"/metrics: HTTP {status}")
        check(b"care_inference_requests_total" in body, "/metrics: no care_inference_requests")
        return f"{len(body.splitlines())} lines"

    # --- gRPC -------------------------------------------------------------------------------
    def grpc_health(self) -> str:
        with grpc.insecure_channel(self.grpc_target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        serving = health_pb2.HealthCheckResponse.SERVING
        check(reply.status == serving, f"gRPC health: status {reply.status}, expected SERVING")
        return "SERVING"

    def grpc_classify(self) -> str:
        with grpc.insecure_channel(self.grpc_target) as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            request = inference_pb2.ClassifyRequest(image=self.image, top_k=3)
            reply, ms = timed(lambda: stub.Classify(request, timeout=60), self.repeat)
        self.latency_ms["gRPC Classify"] = ms
        check(len(reply.predictions) == 3, f"gRPC Classify: {len(reply.predictions)} predictions")
        top = reply.predictions[0]
        return f"{reply.model} v{reply.version}: {top.label} {top.probability:.3f}"

    # --- Open Inference Protocol v2 ---------------------------------------------------------
    def v2_protocol(self) -> str:
        status, _ = http("GET", self.base + "/v2/health/live")
        if status == 404:
            self.v2 = "not served"
            return "v2: not served (/v2/health/live answers 404)"
        check(status == 200, f"GET /v2/health/live: HTTP {status}, expected 200 or 404")
        status, _ = http("GET", self.base + "/v2/health/ready")
        check(status == 200, f"GET /v2/health/ready: HTTP {status}, expected 200")
        server = expect_json("GET", self.base + "/v2")
        check("name" in server and "version" in server, f"GET /v2: {server}")
        model = "shapes-classifier"
        status, _ = http("GET", f"{self.base}/v2/models/{model}/ready")
        check(status == 200, f"GET /v2/models/{model}/ready: HTTP {status}")
        meta = expect_json("GET", f"{self.base}/v2/models/{model}")
        check(meta.get("name") == model, f"v2 metadata name: {meta.get('name')!r}")
        check(bool(meta.get("inputs")) and bool(meta.get("outputs")), "v2 metadata: no inputs")
        # One input per request: the smallest numeric input the metadata lists (JSON carries
        # BYTES as text, so an encoded image would need the binary extension).
        numeric = [s for s in meta["inputs"] if s["datatype"] != "BYTES"]
        check(bool(numeric), f"v2 metadata: no numeric input in {meta['inputs']}")
        spec = min(numeric, key=lambda s: len(self.v2_input(s)["data"]))
        request = {"inputs": [self.v2_input(spec)]}
        body = json.dumps(request).encode()
        url = f"{self.base}/v2/models/{model}/infer"
        out, ms = timed(lambda: expect_json("POST", url, body, "application/json"), self.repeat)
        self.latency_ms["REST v2 infer"] = ms
        check(out.get("model_name") == model, f"v2 infer model_name: {out.get('model_name')!r}")
        outputs = out.get("outputs") or []
        check(len(outputs) >= 1, "v2 infer: no outputs")
        for tensor in outputs:
            check(tensor.get("datatype") in V2_DTYPES, f"v2 output datatype: {tensor}")
            count = 1
            for dim in tensor["shape"]:
                count *= int(dim)
            data = tensor.get("data", [])
            flat = self.flatten(data)
            check(len(flat) == count, f"v2 output {tensor['name']}: {len(flat)} values, "
                                      f"shape {tensor['shape']} needs {count}")  # fmt: skip
        grpc_live = self.v2_grpc_flag("ServerLive")
        grpc_ready = self.v2_grpc_flag("ServerReady")
        check(grpc_live and grpc_ready, f"v2 gRPC: live={grpc_live} ready={grpc_ready}")
        self.v2 = "served"
        names = ", ".join(f"{t['name']}{t['shape']}" for t in outputs)
        return f"REST health, metadata, infer({spec['name']}) -> {names}; gRPC live+ready"

    def v2_grpc_flag(self, method: str) -> bool:
        """inference.GRPCInferenceService ServerLive/ServerReady without generated code: the
        request is an empty message, the reply one bool field (tag 1): b"\\x08\\x01" = true."""
        with grpc.insecure_channel(self.grpc_target) as channel:
            call = channel.unary_unary(
                f"/inference.GRPCInferenceService/{method}",
                request_serializer=lambda raw: raw,
                response_deserializer=lambda raw: raw,
            )
            reply = call(b"", timeout=10)
        return bool(reply == b"\x08\x01")

    @staticmethod
    def v2_input(spec: dict[str, Any]) -> dict[str, Any]:
        """A numeric v2 input tensor that follows the metadata (batch 1, free dims 64)."""
        dtype = spec["datatype"]
        shape = [1 if i == 0 and int(d) < 0 else (64 if int(d) < 0 else int(d))
                 for i, d in enumerate(spec["shape"])]  # fmt: skip
        count = 1
        for dim in shape:
            count *= dim
        value: float | int = 0.5 if dtype.startswith("FP") else 1
        return {"name": spec["name"], "shape": shape, "datatype": dtype, "data": [value] * count}

    @staticmethod
    def flatten(data: Any) -> list[Any]:
        if isinstance(data, list):
            return [x for item in data for x in Prober.flatten(item)]
        return [data]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--http", required=True, help="REST base URL, e.g. http://127.0.0.1:18300")
    parser.add_argument("--grpc", required=True, help="gRPC target, e.g. 127.0.0.1:18301")
    parser.add_argument("--repeat", type=int, default=5, help="requests per timed endpoint")
    parser.add_argument("--json", type=Path, help="write latencies and the v2 verdict here")
    args = parser.parse_args(argv)
    prober = Prober(args.http, args.grpc, max(1, args.repeat))
    checks: list[tuple[str, Callable[[], str]]] = [
        ("health", prober.health),
        ("classify", prober.classify),
        ("detect", prober.detect),
        ("segment", prober.segment),
        ("metrics", prober.metrics),
        ("grpc health", prober.grpc_health),
        ("grpc classify", prober.grpc_classify),
        ("v2", prober.v2_protocol),
    ]
    failed = 0
    for name, fn in checks:
        try:
            print(f"ok    {name:14s} {fn()}")
        except (ProbeError, KeyError, TypeError, ValueError, grpc.RpcError, OSError) as exc:
            failed += 1
            print(f"FAIL  {name:14s} {type(exc).__name__}: {exc}")
    if args.json:
        args.json.write_text(json.dumps({"latency_ms": prober.latency_ms, "v2": prober.v2}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
