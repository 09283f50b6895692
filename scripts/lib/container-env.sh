# shellcheck shell=bash
# Sourced by the deployment scripts: picks a container engine and, for podman, writes the
# configuration these machines need (docs/deployment.md, "Container engine") under a cache
# folder of its own, so nothing depends on hand setup in /etc.
#
#   CARE_SERVE_ENGINE=podman|docker   force an engine (default: docker if its daemon answers and
#                                     buildx exists, else podman)
#   CARE_SERVE_CONTAINERS_DIR=DIR     podman's config and image storage (default
#                                     ${XDG_CACHE_HOME:-$HOME/.cache}/care-serve/containers)

CARE_SERVE_CONTAINERS_DIR="${CARE_SERVE_CONTAINERS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/care-serve/containers}"

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# pick_engine: sets ENGINE to "docker" or "podman".
pick_engine() {
    if [[ -n "${CARE_SERVE_ENGINE:-}" ]]; then
        ENGINE="$CARE_SERVE_ENGINE"
    elif command -v docker >/dev/null && docker info >/dev/null 2>&1 \
        && docker buildx version >/dev/null 2>&1; then
        ENGINE=docker
    elif command -v podman >/dev/null; then
        ENGINE=podman
    else
        die "neither a running docker daemon with buildx nor podman found (apt-get install podman)"
    fi
    if [[ "$ENGINE" == podman ]]; then
        configure_podman
    fi
    export ENGINE
}

# configure_podman: containers.conf + storage.conf of our own (Debian 12's podman 4.3 defaults
# fail here: crun cannot handle hybrid cgroups, the default ulimits cannot be set).
configure_podman() {
    local dir="$CARE_SERVE_CONTAINERS_DIR"
    mkdir -p "$dir/storage" "$dir/run"
    cat >"$dir/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
    cat >"$dir/storage.conf" <<CONF
[storage]
driver = "overlay"
graphroot = "$dir/storage"
runroot = "$dir/run"
CONF
    export CONTAINERS_CONF="$dir/containers.conf"
    export CONTAINERS_STORAGE_CONF="$dir/storage.conf"
    ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
}

# enable_emulation ARCH: lets the kernel run foreign binaries through qemu-user-static.
enable_emulation() {
    local arch="$1" qemu
    case "$arch" in
        amd64 | x86_64) [[ "$(uname -m)" == x86_64 ]] && return 0; qemu=qemu-x86_64 ;;
        arm64 | aarch64) [[ "$(uname -m)" == aarch64 ]] && return 0; qemu=qemu-aarch64 ;;
        *) die "unknown architecture: $arch (amd64 or arm64)" ;;
    esac
    if ! command -v "$qemu-static" >/dev/null || ! command -v update-binfmts >/dev/null; then
        log "installing qemu-user-static and binfmt-support (apt-get)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-user-static binfmt-support \
            >/dev/null || die "could not install qemu-user-static binfmt-support"
    fi
    if [[ ! -e /proc/sys/fs/binfmt_misc/status ]]; then
        mount -t binfmt_misc none /proc/sys/fs/binfmt_misc || die "cannot mount binfmt_misc"
    fi
    update-binfmts --enable "$qemu" >/dev/null 2>&1 || true
    [[ -e "/proc/sys/fs/binfmt_misc/$qemu" ]] || die "binfmt entry $qemu is not registered"
}

# host_arch: amd64 or arm64
host_arch() {
    case "$(uname -m)" in
        x86_64) echo amd64 ;;
        aarch64) echo arm64 ;;
        *) uname -m ;;
    esac
}

# write_arm64_cpuinfo FILE: an ARM-format /proc/cpuinfo (a Cortex-A76-like core per host CPU),
# to mount over /proc/cpuinfo of arm64 containers emulated by QEMU < 10, which otherwise show
# the host's x86 file (onnxruntime's CPU detection then segfaults).
write_arm64_cpuinfo() {
    local i
    for ((i = 0; i < $(nproc); i++)); do
        printf 'processor\t: %d\nBogoMIPS\t: 50.00\n' "$i"
        printf 'Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\n'
        printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x4\nCPU part\t: 0xd0b\nCPU revision\t: 1\n\n'
    done >"$1"
}
