#!/usr/bin/env bash
# Build the serving image for one platform, start it on the bundled model store and check it.
#
#   scripts/verify-image.sh --platform linux/amd64|linux/arm64 [options]
#
#   --base-image IMG   base image (default: localhost/care-serve-base:bookworm-ARCH, made by
#                      scripts/make-base-image.sh when missing; e.g. python:3.11-slim with docker)
#   --tag TAG          image name (default: localhost/care-serve:verify-ARCH)
#   --no-build         check an image built before
#   --http-port N      host port for REST (default 18300); gRPC is N+1
#   --repeat N         timed requests per endpoint (default 5; 3 under emulation)
#   --report FILE      also write the results table (markdown) to FILE
#
# Engine: docker (when its daemon answers and buildx exists) or podman, configured by
# scripts/lib/container-env.sh. A foreign platform runs under qemu-user-static (installed and
# registered here); QEMU before 10 shows an emulated arm64 process the host's x86 /proc/cpuinfo,
# on which onnxruntime crashes, so an ARM-format cpuinfo written here is mounted over it.
# Checks: healthcheck present and healthy, REST /classify /detect /segment, gRPC health and
# Classify, the v2 protocol (or "v2: not served"), torch absent, non-root (uid/gid 10001),
# read-only root filesystem, exit code 0 within the drain bound after SIGTERM. Exit 0 = all passed.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
# shellcheck source=lib/container-env.sh
source "$here/lib/container-env.sh"

platform="" base="" tag="" build=1 http_port=18300 repeat="" report=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --platform) platform="$2"; shift 2 ;;
        --base-image) base="$2"; shift 2 ;;
        --tag) tag="$2"; shift 2 ;;
        --no-build) build=0; shift ;;
        --http-port) http_port="$2"; shift 2 ;;
        --repeat) repeat="$2"; shift 2 ;;
        --report) report="$2"; shift 2 ;;
        -h | --help) sed -n '2,22p' "$0"; exit 0 ;;
        *) die "unknown option: $1" ;;
    esac
done
case "$platform" in
    linux/amd64) arch=amd64 ;;
    linux/arm64) arch=arm64 ;;
    *) die "--platform linux/amd64|linux/arm64 is required" ;;
esac
grpc_port=$((http_port + 1))
tag="${tag:-localhost/care-serve:verify-$arch}"
base="${base:-localhost/care-serve-base:bookworm-$arch}"
python="$repo/.venv/bin/python"
[[ -x "$python" ]] || die "no $python: run 'make setup' first (the probe uses the project's venv)"
drain_s=10 # CARE_SERVE_GRACEFUL_SHUTDOWN_S default; the exit must come within drain + 1 s

# elapsed START DIGITS: seconds since START (a date +%s.%N), with DIGITS decimals.
elapsed() { awk -v s="$1" -v now="$(date +%s.%N)" -v d="$2" 'BEGIN { printf("%." d "f", now - s) }'; }

pick_engine
emulated=0
if [[ "$arch" != "$(host_arch)" ]]; then
    enable_emulation "$arch"
    emulated=1
    repeat="${repeat:-3}"
fi
repeat="${repeat:-5}"
work="$(mktemp -d "${TMPDIR:-/tmp}/care-verify.XXXXXX")"
name="care-serve-verify-$arch-$$"
cleanup() {
    $ENGINE rm -f "$name" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

# QEMU before 10 shows emulated arm64 processes the host's x86 /proc/cpuinfo; onnxruntime then
# crashes (in the build's import check too), so both get an ARM-format one.
cpuinfo_mount=""
if [[ "$emulated" == 1 && "$arch" == arm64 ]]; then
    qemu_major=$(qemu-aarch64-static --version | sed -n 's/.*version \([0-9]*\).*/\1/p')
    if [[ "${qemu_major:-0}" -lt 10 ]]; then
        write_arm64_cpuinfo "$work/cpuinfo"
        cpuinfo_mount="$work/cpuinfo:/proc/cpuinfo:ro"
        log "QEMU $qemu_major: an ARM-format /proc/cpuinfo is mounted in the build and the container"
    fi
fi

# ---- build ---------------------------------------------------------------------------------
build_s="-"
if [[ "$build" == 1 ]]; then
    if ! $ENGINE image inspect "$base" >/dev/null 2>&1; then
        [[ "$base" == localhost/care-serve-base:* ]] \
            || die "base image $base not found (pull it, or omit --base-image)"
        log "base image $base missing: making it with scripts/make-base-image.sh"
        "$here/make-base-image.sh" --arch "$arch" --tag "$base" >/dev/null
    fi
    args=(--platform "$platform" -f "$repo/docker/Dockerfile" -t "$tag"
        --build-arg "BASE_IMAGE=$base")
    # pip inside the build uses the host's index settings (only those reachable from a
    # container: http(s) URLs) and the host's CA bundle.
    for var in PIP_INDEX_URL PIP_EXTRA_INDEX_URL; do
        value="${!var:-}"
        [[ "$value" == http* ]] && args+=(--build-arg "$var=$value")
    done
    cert="${PIP_CERT:-$(pip3 config get global.cert 2>/dev/null || true)}"
    if [[ "$ENGINE" == podman ]]; then
        args+=(--format docker --pull=never) # docker format keeps HEALTHCHECK
        [[ -n "$cpuinfo_mount" ]] && args+=(-v "$cpuinfo_mount")
        if [[ -n "$cert" && -f "$cert" ]]; then
            args+=(-v "$cert:/etc/ssl/certs/host-ca.pem:ro" --build-arg PIP_CERT=/etc/ssl/certs/host-ca.pem)
        fi
        cmd=(podman build)
    else
        cmd=(docker buildx build --load)
    fi
    log "building $tag ($platform, base $base, $ENGINE)"
    start=$(date +%s.%N)
    nice -n 10 "${cmd[@]}" "${args[@]}" "$repo" >"$work/build.log" 2>&1 \
        || { tail -30 "$work/build.log" >&2; die "build failed"; }
    build_s=$(elapsed "$start" 0)
fi

# ---- image facts -----------------------------------------------------------------------------
inspect() { $ENGINE image inspect --format "$1" "$tag"; }
image_arch=$(inspect '{{.Architecture}}')
[[ "$image_arch" == "$arch" ]] || die "image architecture is $image_arch, expected $arch"
image_bytes=$(inspect '{{.Size}}')
base_bytes=$($ENGINE image inspect --format '{{.Size}}' "$base" 2>/dev/null || echo 0)
added_mb=$(((image_bytes - base_bytes) / 1000000))
image_user=$(inspect '{{.Config.User}}')
healthcheck=$(inspect '{{json .Config.Healthcheck}}' 2>/dev/null || echo null)
if [[ "$healthcheck" == null || -z "$healthcheck" ]]; then
    healthcheck=$(inspect '{{json .HealthCheck}}' 2>/dev/null || echo null)
fi

# ---- run -----------------------------------------------------------------------------------
run_args=(-d --name "$name" --platform "$platform"
    -p "127.0.0.1:$http_port:8000" -p "127.0.0.1:$grpc_port:50051"
    --read-only --tmpfs /tmp:rw,size=64m --tmpfs /home/care:rw,size=16m)
[[ -n "$cpuinfo_mount" ]] && run_args+=(-v "$cpuinfo_mount")
log "starting $name"
t0=$(date +%s.%N)
# (podman 4.3 logs that it cannot reach systemd for healthcheck timers: we run the check here)
$ENGINE run "${run_args[@]}" "$tag" >/dev/null 2>"$work/run.log" \
    || { cat "$work/run.log" >&2; die "could not start the container"; }

healthy() {
    if [[ "$ENGINE" == podman ]]; then
        podman healthcheck run "$name" >/dev/null 2>&1
    else
        [[ "$(docker inspect --format '{{.State.Health.Status}}' "$name")" == healthy ]]
    fi
}
ready_timeout=$((emulated == 1 ? 600 : 120))
until healthy; do
    if [[ "$($ENGINE inspect --format '{{.State.Running}}' "$name")" != true ]]; then
        $ENGINE logs "$name" 2>&1 | tail -30 >&2
        die "the container exited before it was healthy"
    fi
    if (($(elapsed "$t0" 0) > ready_timeout)); then
        $ENGINE logs "$name" 2>&1 | tail -30 >&2
        die "not healthy after ${ready_timeout}s"
    fi
    sleep 0.5
done
ready_s=$(elapsed "$t0" 1)
log "healthy after ${ready_s}s"

# ---- checks --------------------------------------------------------------------------------
failures=()
pass() { printf 'ok    %-14s %s\n' "$1" "$2"; }
fail() { printf 'FAIL  %-14s %s\n' "$1" "$2"; failures+=("$1"); }

[[ "$healthcheck" != null && -n "$healthcheck" ]] && pass healthcheck "in the image config" \
    || fail healthcheck "HEALTHCHECK missing from the image config (built in OCI format?)"
if "$python" "$here/probe_server.py" --http "http://127.0.0.1:$http_port" \
    --grpc "127.0.0.1:$grpc_port" --repeat "$repeat" --json "$work/probe.json"; then
    :
else
    failures+=(probe)
fi
if $ENGINE exec "$name" python -c \
    'import importlib.util as u, sys; sys.exit(1 if u.find_spec("torch") else 0)'; then
    pass "torch absent" "import torch finds nothing"
else
    fail "torch absent" "torch is installed in the image"
fi
ids=$($ENGINE exec "$name" sh -c 'grep -E "^(Uid|Gid):" /proc/1/status | tr -s "\t " " "' | tr '\n' ' ')
if [[ "$ids" == "Uid: 10001 10001 10001 10001 Gid: 10001 10001 10001 10001 " ]]; then
    pass "non-root" "PID 1 runs as uid/gid 10001 (image USER $image_user)"
else
    fail "non-root" "PID 1: $ids"
fi
if $ENGINE exec "$name" sh -c 'touch /opt/care-serve/x 2>/dev/null'; then
    fail "read-only" "the root filesystem is writable"
else
    pass "read-only" "runs with a read-only root filesystem (tmpfs /tmp, /home/care)"
fi

# ---- SIGTERM -------------------------------------------------------------------------------
t1=$(date +%s.%N)
$ENGINE kill --signal TERM "$name" >/dev/null
stop_deadline=$((drain_s + 1 + (emulated == 1 ? 30 : 0)))
while [[ "$($ENGINE inspect --format '{{.State.Running}}' "$name")" == true ]]; do
    if (($(elapsed "$t1" 0) > stop_deadline + 10)); then
        break
    fi
    sleep 0.2
done
stop_s=$(elapsed "$t1" 1)
exit_code=$($ENGINE inspect --format '{{.State.ExitCode}}' "$name")
if [[ "$exit_code" == 0 ]] && awk "BEGIN{exit !($stop_s <= $stop_deadline)}"; then
    pass SIGTERM "exit code 0 after ${stop_s}s (bound ${stop_deadline}s)"
else
    fail SIGTERM "exit code $exit_code after ${stop_s}s (expected 0 within ${stop_deadline}s)"
    $ENGINE logs "$name" 2>&1 | tail -10 >&2
fi

# ---- table ---------------------------------------------------------------------------------
latency() {
    "$python" -c 'import json,sys; d=json.load(open(sys.argv[1])); v=d["latency_ms"].get(sys.argv[2]); print("-" if v is None else f"{v:.1f}")' \
        "$work/probe.json" "$1" 2>/dev/null || echo "-"
}
v2=$("$python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["v2"])' "$work/probe.json" 2>/dev/null || echo "-")
verdict=$([[ ${#failures[@]} -eq 0 ]] && echo "all passed" || echo "FAILED: ${failures[*]}")
mode=$([[ "$emulated" == 1 ]] && echo "emulated (qemu-user-static)" || echo native)
table="| platform | $platform ($mode, $ENGINE) |
| --- | --- |
| image size | $((image_bytes / 1000000)) MB ($added_mb MB on top of the $((base_bytes / 1000000)) MB base $base) |
| build time | ${build_s} s |
| time to ready (run to healthy) | $ready_s s |
| REST /classify, median of $repeat | $(latency "REST /classify") ms |
| REST /detect | $(latency "REST /detect") ms |
| REST /segment | $(latency "REST /segment") ms |
| gRPC Classify | $(latency "gRPC Classify") ms |
| v2 infer | $(latency "REST v2 infer") ms (v2: $v2) |
| SIGTERM | exit $exit_code after $stop_s s |
| checks | $verdict |"
echo
echo "$table"
[[ -n "$report" ]] && echo "$table" >"$report"
[[ ${#failures[@]} -eq 0 ]]
