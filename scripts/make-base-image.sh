#!/usr/bin/env bash
# Make a Python base image from Debian packages alone (no registry needed): debootstrap a
# minimal Debian root with python3 + python3-venv, tar it and import it as an image.
# This is also how an air-gapped site makes its base image (point --mirror at its Debian mirror).
#
#   scripts/make-base-image.sh --arch amd64|arm64 [--tag NAME] [--suite bookworm]
#                              [--mirror URL] [--keep-rootfs DIR]
#
# Prints the image name (default: localhost/care-serve-base:bookworm-ARCH).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib/container-env.sh
source "$here/lib/container-env.sh"

arch="" tag="" suite=bookworm mirror="http://deb.debian.org/debian"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --arch) arch="$2"; shift 2 ;;
        --tag) tag="$2"; shift 2 ;;
        --suite) suite="$2"; shift 2 ;;
        --mirror) mirror="$2"; shift 2 ;;
        -h | --help) sed -n '2,10p' "$0"; exit 0 ;;
        *) die "unknown option: $1" ;;
    esac
done
case "$arch" in amd64 | arm64) ;; *) die "--arch amd64|arm64 is required" ;; esac
tag="${tag:-localhost/care-serve-base:$suite-$arch}"

pick_engine
command -v debootstrap >/dev/null || {
    log "installing debootstrap (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null
}
[[ "$arch" == "$(host_arch)" ]] || enable_emulation "$arch"

work="$(mktemp -d "${TMPDIR:-/tmp}/care-base.XXXXXX")"
trap 'rm -rf "$work"' EXIT
root="$work/root"
log "debootstrap $suite ($arch, minbase) into $root"
nice -n 10 debootstrap --arch="$arch" --variant=minbase \
    --include=python3,python3-venv,ca-certificates "$suite" "$root" "$mirror" \
    >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log" >&2; die "debootstrap failed"; }

# What an image does not need: apt lists and caches, docs, man pages, locales but C.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
    "$root"/var/log/*.log "$root"/var/log/apt/*
find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} + 2>/dev/null || true

log "importing as $tag"
if [[ "$ENGINE" == podman ]]; then platform_arg=(--arch "$arch"); else platform_arg=(--platform "linux/$arch"); fi
tar -C "$root" --numeric-owner -c . | $ENGINE import "${platform_arg[@]}" \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    - "$tag" >/dev/null
$ENGINE image inspect --format '{{.Architecture}} {{.Size}}' "$tag" >&2
echo "$tag"
