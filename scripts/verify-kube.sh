#!/usr/bin/env bash
# Run deploy/kubernetes's ConfigMap + Deployment on this machine with `podman kube play`, probe
# the pod, check it runs non-root on a read-only root, and take it down.
#
#   scripts/verify-kube.sh [--image localhost/care-serve:verify-amd64] [--http-port 18330]
#
# The image is the one scripts/verify-image.sh built for this machine's architecture. The
# variant played (scripts/kube_play_variant.py) differs from the manifests only in what one
# machine needs: 1 replica, the model-store claim as a hostPath to model_store/, loopback
# hostPorts. Also runs kubernetes-validate --strict on every core manifest.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
# shellcheck source=lib/container-env.sh
source "$here/lib/container-env.sh"

image="" http_port=18330
while [[ $# -gt 0 ]]; do
    case "$1" in
        --image) image="$2"; shift 2 ;;
        --http-port) http_port="$2"; shift 2 ;;
        -h | --help) sed -n '2,11p' "$0"; exit 0 ;;
        *) die "unknown option: $1" ;;
    esac
done
CARE_SERVE_ENGINE=podman pick_engine
command -v catatonit >/dev/null || [[ -x /usr/libexec/podman/catatonit ]] || {
    log "installing catatonit (podman's pod pause process; apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q catatonit >/dev/null
}
image="${image:-localhost/care-serve:verify-$(host_arch)}"
podman image inspect "$image" >/dev/null 2>&1 \
    || die "no image $image: run scripts/verify-image.sh --platform linux/$(host_arch) first"
python="$repo/.venv/bin/python"
grpc_port=$((http_port + 1))

log "kubernetes-validate --strict (core kinds)"
core=()
for f in "$repo"/deploy/kubernetes/*.yaml; do
    grep -q '^kind: ServiceMonitor' "$f" || core+=("$f")
done
"$repo/.venv/bin/kubernetes-validate" --strict --quiet "${core[@]}"

work="$(mktemp -d "${TMPDIR:-/tmp}/care-kube.XXXXXX")"
play="$work/play.yaml"
cleanup() {
    podman kube down "$play" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
"$python" "$here/kube_play_variant.py" --image "$image" --model-store "$repo/model_store" \
    --http-port "$http_port" --grpc-port "$grpc_port" >"$play"

log "podman kube play (image $image)"
podman kube play --replace "$play" 2>&1 | grep -v systemd | sed 's/^/    /' >&2
t0=$(date +%s)
until curl -fs "http://127.0.0.1:$http_port/health/ready" >/dev/null 2>&1; do
    (($(date +%s) - t0 < 120)) || { podman pod logs care-serve-pod-0 2>&1 | tail -20 >&2; die "pod not ready in 120 s"; }
    sleep 1
done
log "ready after $(($(date +%s) - t0)) s"
container=$(podman ps --format '{{.Names}}' | grep -E '^care-serve-pod.*-care-serve$' | head -1 || true)
[[ -n "$container" ]] || die "no care-serve container in the pod: $(podman ps --format '{{.Names}}' | tr '\n' ' ')"
podman inspect --format 'container {{.Name}}: user {{.Config.User}}, read-only root {{.HostConfig.ReadonlyRootfs}}, restart policy {{.HostConfig.RestartPolicy.Name}}' "$container"
failures=0
ids=$(podman exec "$container" sh -c 'grep -E "^(Uid|Gid):" /proc/1/status | tr -s "\t " " "' | tr '\n' ' ')
[[ "$ids" == "Uid: 10001 10001 10001 10001 Gid: 10001 10001 10001 10001 " ]] \
    && echo "ok    non-root       PID 1: $ids" || { echo "FAIL  non-root       PID 1: $ids"; failures=$((failures + 1)); }
podman exec "$container" sh -c 'touch /x 2>/dev/null' \
    && { echo "FAIL  read-only      / is writable"; failures=$((failures + 1)); } \
    || echo "ok    read-only      / is read-only; /tmp is writable: $(podman exec "$container" sh -c 'touch /tmp/x && echo yes')"
threads=$(podman exec "$container" sh -c 'echo $CARE_SERVE_INTRA_OP_THREADS')
echo "ok    settings       from the ConfigMap: CARE_SERVE_INTRA_OP_THREADS=$threads"
"$python" "$here/probe_server.py" --http "http://127.0.0.1:$http_port" --grpc "127.0.0.1:$grpc_port" \
    --repeat 3 || failures=$((failures + 1))
log "podman kube down"
podman kube down "$play" >/dev/null 2>&1
((failures == 0))
