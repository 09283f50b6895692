#!/usr/bin/env bash
# Run a real Prometheus against care-serve on loopback and check the shipped Grafana dashboard.
#
#   scripts/verify-prometheus.sh [--port 18310] [--load-seconds 20]
#
# Starts care-serve from .venv on the bundled store (REST PORT, gRPC PORT+1), derives a loopback
# variant of docker/prometheus.yml (target care-serve:8000 -> 127.0.0.1:PORT) and runs
# Debian's `prometheus` (installed with apt-get if missing) on PORT+9, sends a bounded load
# (scripts/check_dashboard.py load), then checks that the target is up and that every query of
# docker/grafana/dashboards/care-serve.json returns data. Bounded: about 60 s, at most ~3 min.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
# shellcheck source=lib/container-env.sh
source "$here/lib/container-env.sh"

port=18310 load_s=20
while [[ $# -gt 0 ]]; do
    case "$1" in
        --port) port="$2"; shift 2 ;;
        --load-seconds) load_s="$2"; shift 2 ;;
        -h | --help) sed -n '2,11p' "$0"; exit 0 ;;
        *) die "unknown option: $1" ;;
    esac
done
grpc_port=$((port + 1)) prom_port=$((port + 9))
python="$repo/.venv/bin/python"
[[ -x "$python" ]] || die "no $python: run 'make setup' first"
command -v prometheus >/dev/null || {
    log "installing prometheus (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >/dev/null
}

work="$(mktemp -d "${TMPDIR:-/tmp}/care-prom.XXXXXX")"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

log "care-serve on 127.0.0.1:$port (gRPC $grpc_port)"
"$repo/.venv/bin/care-serve" serve --model-store "$repo/model_store" --host 127.0.0.1 \
    --http-port "$port" --grpc-port "$grpc_port" >"$work/serve.log" 2>&1 &
pids+=($!)

sed "s/care-serve:8000/127.0.0.1:$port/" "$repo/docker/prometheus.yml" >"$work/prometheus.yml"
grep -q "127.0.0.1:$port" "$work/prometheus.yml" || die "no care-serve:8000 target in docker/prometheus.yml"
promtool check config "$work/prometheus.yml" >/dev/null
log "prometheus $(prometheus --version 2>&1 | head -1 | cut -d' ' -f3) on 127.0.0.1:$prom_port"
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
    --web.listen-address="127.0.0.1:$prom_port" >"$work/prometheus.log" 2>&1 &
pids+=($!)

for _ in $(seq 120); do
    curl -fs "http://127.0.0.1:$port/health/ready" >/dev/null 2>&1 && break
    sleep 0.5
done
curl -fs "http://127.0.0.1:$port/health/ready" >/dev/null || { tail "$work/serve.log" >&2; die "care-serve not ready"; }

"$python" "$here/check_dashboard.py" load --http "http://127.0.0.1:$port" \
    --grpc "127.0.0.1:$grpc_port" --seconds "$load_s"
sleep 6 # one more scrape (scrape_interval 5s) after the load
"$python" "$here/check_dashboard.py" queries --prometheus "http://127.0.0.1:$prom_port" \
    --dashboard "$repo/docker/grafana/dashboards/care-serve.json" --window 1m
