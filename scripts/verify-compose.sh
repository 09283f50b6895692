#!/usr/bin/env bash
# Start docker-compose.yml with podman-compose (the dev extra installs it) as far as the images can
# be had, probe care-serve through it, and take it down again.
#
#   scripts/verify-compose.sh [--http-port 18320] [--base-image IMG]
#
# care-serve is built from docker/Dockerfile on BASE_IMAGE (default: the localhost base image of
# scripts/make-base-image.sh for this machine's architecture). prom/prometheus and grafana/grafana
# come from a registry; where none is reachable the script says so and checks them only as far as
# they go offline (the config files parse: promtool; the provisioning and dashboard JSON load).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
# shellcheck source=lib/container-env.sh
source "$here/lib/container-env.sh"

http_port=18320 base=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --http-port) http_port="$2"; shift 2 ;;
        --base-image) base="$2"; shift 2 ;;
        -h | --help) sed -n '2,11p' "$0"; exit 0 ;;
        *) die "unknown option: $1" ;;
    esac
done
CARE_SERVE_ENGINE=podman pick_engine
compose="$repo/.venv/bin/podman-compose"
[[ -x "$compose" ]] || die "no $compose: run 'make setup' (podman-compose is in the dev extra)"
arch="$(host_arch)"
base="${base:-localhost/care-serve-base:bookworm-$arch}"
podman image inspect "$base" >/dev/null 2>&1 || "$here/make-base-image.sh" --arch "$arch" --tag "$base" >/dev/null

export BASE_IMAGE="$base" CARE_SERVE_HTTP_HOST_PORT="$http_port" \
    CARE_SERVE_GRPC_HOST_PORT=$((http_port + 1)) PROMETHEUS_HOST_PORT=$((http_port + 2)) \
    GRAFANA_HOST_PORT=$((http_port + 3))
cd "$repo"
project="care-serve-verify-$$"
pc() { "$compose" -p "$project" -f docker-compose.yml "$@"; }
work="$(mktemp -d "${TMPDIR:-/tmp}/care-compose.XXXXXX")"
cleanup() {
    pc down -t 15 >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
failures=0

log "podman-compose $("$compose" version 2>/dev/null | grep -o 'podman-compose version [0-9.]*' | head -1 | cut -d' ' -f3): config"
pc config >"$work/config.yml" 2>"$work/config.err" || { cat "$work/config.err" >&2; die "compose config failed"; }

log "build care-serve (BASE_IMAGE=$base)"
cert="${PIP_CERT:-$(pip3 config get global.cert 2>/dev/null || true)}"
build_args=(--format docker --pull=never)
[[ -n "$cert" && -f "$cert" ]] && build_args+=(-v "$cert:/etc/ssl/certs/host-ca.pem:ro" --build-arg PIP_CERT=/etc/ssl/certs/host-ca.pem)
nice -n 10 "$compose" -p "$project" --podman-build-args "${build_args[*]}" -f docker-compose.yml \
    build care-serve >"$work/build.log" 2>&1 || { tail -20 "$work/build.log" >&2; die "build failed"; }

for image in $(grep -E '^\s+image:' docker-compose.yml | awk '{print $2}' | grep -v '^care-serve'); do
    if timeout 60 podman pull -q "$image" >/dev/null 2>"$work/pull.err"; then
        log "pulled $image"
    else
        log "cannot pull $image: $(tail -1 "$work/pull.err" | cut -c1-160)"
        echo "$image" >>"$work/unavailable"
    fi
done

services=(care-serve)
if [[ ! -s "$work/unavailable" ]]; then services=(); fi # everything could be had: start all
log "up -d ${services[*]:-(all services)}"
pc up -d --no-build "${services[@]}" >"$work/up.log" 2>&1 || { tail -20 "$work/up.log" >&2; die "up failed"; }
container=$(podman ps --filter "label=io.podman.compose.project=$project" --filter "label=com.docker.compose.service=care-serve" --format '{{.Names}}' | head -1)
[[ -n "$container" ]] || die "no care-serve container is running"
t0=$(date +%s)
until podman healthcheck run "$container" >/dev/null 2>&1; do
    (($(date +%s) - t0 < 120)) || { podman logs "$container" 2>&1 | tail -20 >&2; die "care-serve not healthy in 120 s"; }
    sleep 1
done
log "$container healthy after $(($(date +%s) - t0)) s (compose healthcheck)"
podman inspect --format 'read-only root: {{.HostConfig.ReadonlyRootfs}}; user: {{.Config.User}}' "$container"
"$repo/.venv/bin/python" "$here/probe_server.py" --http "http://127.0.0.1:$http_port" \
    --grpc "127.0.0.1:$((http_port + 1))" --repeat 3 || failures=$((failures + 1))

log "offline checks of the services whose images could not be had"
sed "s/care-serve:8000/127.0.0.1:$http_port/" docker/prometheus.yml >"$work/prometheus.yml"
promtool check config "$work/prometheus.yml" >/dev/null && log "docker/prometheus.yml: promtool check config ok" \
    || failures=$((failures + 1))
"$repo/.venv/bin/python" - <<'PY' || failures=$((failures + 1))
import json, pathlib, yaml
root = pathlib.Path("docker/grafana")
for path in sorted(root.rglob("*.yml")):
    assert yaml.safe_load(path.read_text())["apiVersion"] == 1, path
for path in sorted(root.rglob("*.json")):
    assert json.loads(path.read_text())["panels"], path
print("docker/grafana: provisioning YAML and dashboard JSON load")
PY
if [[ -s "$work/unavailable" ]]; then
    echo "not started (image not available here): $(tr '\n' ' ' <"$work/unavailable")"
fi
log "down"
pc down -t 15 >/dev/null 2>&1
((failures == 0))
