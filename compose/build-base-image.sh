#!/usr/bin/env bash
# Build a local base image for compose/Dockerfile without any container registry:
# debootstrap a minimal Debian (with Python 3.11 and Debian's beanstalkd) and `docker import` it.
# Cached: does nothing when the image already exists (--force rebuilds).
#
#   compose/build-base-image.sh [--force] [IMAGE]      (default IMAGE: beanrouter-base:bookworm)
#
# Environment: DEBIAN_MIRROR (default: the first Debian URI of this machine's apt sources),
# DEBIAN_SUITE (default bookworm). Needs root, debootstrap and a running Docker engine.
set -euo pipefail

force=0
if [ "${1:-}" = "--force" ]; then force=1; shift; fi
image=${1:-${BEANROUTER_BASE_IMAGE:-beanrouter-base:bookworm}}
suite=${DEBIAN_SUITE:-bookworm}
packages=python3,python3-venv,beanstalkd

if [ "$force" -eq 0 ] && docker image inspect "$image" >/dev/null 2>&1; then
    echo "base image $image exists (compose/build-base-image.sh --force rebuilds it)"
    exit 0
fi

mirror_from_apt() {  # the first plain Debian archive URI (not -security) of the apt sources
    local files=() f
    for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] && files+=("$f")
    done
    [ ${#files[@]} -gt 0 ] || return 0
    {
        sed -n 's/^URIs:[[:space:]]*//p' "${files[@]}" | tr ' ' '\n'
        sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]\+\).*/\2/p' "${files[@]}"
    } | grep -E '/debian/?$' | head -n 1
}
mirror=${DEBIAN_MIRROR:-$(mirror_from_apt)}
if [ -z "$mirror" ]; then
    echo "build-base-image: no Debian mirror found in the apt sources; set DEBIAN_MIRROR" >&2
    exit 1
fi
command -v debootstrap >/dev/null || { echo "build-base-image: debootstrap is not installed" >&2; exit 1; }

root=$(mktemp -d "${TMPDIR:-/var/tmp}/beanrouter-rootfs.XXXXXX")
trap 'rm -rf "$root"' EXIT
start=$(date +%s)
echo "debootstrap --variant=minbase $suite ($packages) ..."
if ! debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$mirror" \
        >"$root.log" 2>&1; then
    tail -n 30 "$root.log" >&2
    rm -f "$root.log"
    echo "build-base-image: debootstrap failed" >&2
    exit 1
fi
rm -f "$root.log"
# Smaller image: no package caches or lists (the image never runs apt), no docs.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/*
tar -C "$root" -c . | docker import \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' - "$image" >/dev/null
echo "built base image $image in $(($(date +%s) - start)) s"
