"""Load a running care-serve, then check that Prometheus scrapes it and every dashboard query
returns data. Used by scripts/verify-prometheus.sh.

    .venv/bin/python scripts/check_dashboard.py load --http URL --grpc HOST:PORT --seconds 20
    .venv/bin/python scripts/check_dashboard.py queries --prometheus URL \
        --dashboard docker/grafana/dashboards/care-serve.json [--window 1m]

``load`` sends a bounded mix for at most --seconds: concurrent REST /classify, /detect and
/segment and gRPC Classify (so batches form), plus a few invalid images (outcome invalid_input).
``queries`` waits until the care-serve target is up, then runs each panel query (with Grafana's
``$__rate_interval`` replaced by --window) and prints a table; exit 1 if any returns no series
or only NaN.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from care_serve.grpc_gen.care_serve.v1 import inference_pb2, inference_pb2_grpc
from scripts.probe_server import http, sample_png


def dashboard_queries(path: Path) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel of a Grafana dashboard JSON."""
    dashboard = json.loads(path.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def load(http_base: str, grpc_target: str, seconds: float, workers: int = 6) -> int:
    image = sample_png()
    deadline = time.monotonic() + seconds
    paths = ["/classify", "/detect", "/segment?format=json"]
    counts = {"ok": 0, "bad": 0}

    def worker(index: int) -> None:
        with grpc.insecure_channel(grpc_target) as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            n = 0
            while time.monotonic() < deadline and n < 2000:
                n += 1
                if index == 0 and n % 10 == 0:  # a few bad requests: outcome invalid_input
                    status, _ = http("POST", http_base + "/classify", b"not an image", "image/png")
                    counts["bad"] += status == 400 or status == 415 or status == 422
                elif index == 1:
                    stub.Classify(inference_pb2.ClassifyRequest(image=image), timeout=30)
                    counts["ok"] += 1
                else:
                    status, _ = http("POST", http_base + paths[n % 3], image, "image/png")
                    counts["ok"] += status == 200

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(worker, range(workers)))
    print(f"load: {counts['ok']} good and {counts['bad']} rejected requests in {seconds:.0f} s")
    return 0 if counts["ok"] and counts["bad"] else 1


def prom_query(base: str, expr: str) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.loads(response.read())
    if body.get("status") != "success":
        raise RuntimeError(f"query failed: {expr}: {body}")
    return list(body["data"]["result"])


def wait_for_target(base: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{base}/api/v1/targets", timeout=10) as response:
            targets = json.loads(response.read())["data"]["activeTargets"]
        for target in targets:
            if target["labels"].get("job") == "care-serve" and target["health"] == "up":
                return f"{target['scrapeUrl']} up, last scrape {target['lastScrape']}"
        time.sleep(1)
    raise SystemExit(f"the care-serve target was not up within {timeout_s:.0f} s")


def queries(base: str, dashboard: Path, window: str) -> int:
    print("prometheus target:", wait_for_target(base, 60))
    failed = 0
    rows = []
    for title, expr in [("scrape", 'up{job="care-serve"}'), *dashboard_queries(dashboard)]:
        result = prom_query(base, expr.replace("$__rate_interval", window))
        values = [float(s["value"][1]) for s in result]
        finite = [v for v in values if not math.isnan(v)]
        ok = bool(finite)
        failed += not ok
        sample = f"{finite[0]:.4g}" if finite else "no data"
        rows.append((("ok" if ok else "FAIL"), title, len(result), sample, expr))
    print("| check | panel | series | first value | query |\n| --- | --- | --- | --- | --- |")
    for verdict, title, n, sample, expr in rows:
        print(f"| {verdict} | {title} | {n} | {sample} | `{expr}` |")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_load = sub.add_parser("load")
    p_load.add_argument("--http", required=True)
    p_load.add_argument("--grpc", required=True)
    p_load.add_argument("--seconds", type=float, default=20.0)
    p_q = sub.add_parser("queries")
    p_q.add_argument("--prometheus", required=True)
    p_q.add_argument("--dashboard", type=Path, required=True)
    p_q.add_argument("--window", default="1m")
    args = parser.parse_args(argv)
    if args.command == "load":
        return load(args.http, args.grpc, min(args.seconds, 120.0))
    return queries(args.prometheus.rstrip("/"), args.dashboard, args.window)


if __name__ == "__main__":
    sys.exit(main())
