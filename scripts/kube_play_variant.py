"""Derive a single-machine variant of deploy/kubernetes for `podman kube play`.

    .venv/bin/python scripts/kube_play_variant.py --image IMG --model-store DIR \
        --http-port 18330 --grpc-port 18331 > play.yaml

Keeps the ConfigMap and the Deployment as they are except what one machine without a cluster
needs: one replica, the model-store claim replaced by a hostPath to DIR, the image replaced by a
local one, and hostPorts on loopback for the two container ports. The TLS and API-key Secrets
are left out (plaintext, no keys, probes over HTTP): what they do is tested on loopback by
tests/integration/security, and the manifests' wiring of them by tests/acceptance/deploy.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

KUBE = Path(__file__).resolve().parent.parent / "deploy" / "kubernetes"


def variant(image: str, model_store: Path, http_port: int, grpc_port: int) -> str:
    configmap = yaml.safe_load((KUBE / "configmap.yaml").read_text())
    deployment = yaml.safe_load((KUBE / "deployment.yaml").read_text())
    deployment["spec"]["replicas"] = 1
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    container["image"] = image
    host_ports = {"http": http_port, "grpc": grpc_port}
    for port in container["ports"]:
        port["hostPort"] = host_ports[port["name"]]
        port["hostIP"] = "127.0.0.1"
    secrets = {v["name"] for v in pod["volumes"] if "secret" in v}
    pod["volumes"] = [v for v in pod["volumes"] if v["name"] not in secrets]
    container["volumeMounts"] = [m for m in container["volumeMounts"] if m["name"] not in secrets]
    container.pop("env", None)  # the Secrets' paths
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        container[probe]["httpGet"]["scheme"] = "HTTP"
    for volume in pod["volumes"]:
        if "persistentVolumeClaim" in volume:
            del volume["persistentVolumeClaim"]
            volume["hostPath"] = {"path": str(model_store.resolve()), "type": "Directory"}
    return yaml.safe_dump_all([configmap, deployment], sort_keys=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", required=True)
    parser.add_argument("--model-store", type=Path, required=True)
    parser.add_argument("--http-port", type=int, default=18330)
    parser.add_argument("--grpc-port", type=int, default=18331)
    args = parser.parse_args()
    sys.stdout.write(variant(args.image, args.model_store, args.http_port, args.grpc_port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
