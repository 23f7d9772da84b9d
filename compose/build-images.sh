#!/usr/bin/env bash
# Build the cluster images from this checkout, with no network inside the build:
#   beanrouter:local            bundled server, proxy, CLI   (Dockerfile target beanrouter)
#   beanrouter-beanstalkd:local the same plus Debian's beanstalkd  (target beanstalkd)
#
#   compose/build-images.sh [--if-engine] [--force]
#
# --if-engine: do nothing (exit 0) when no Docker engine answers (for `make test` on machines
# without one). The images carry a label with a hash of the sources they were built from; when
# both are current the build is skipped. BEANROUTER_BASE_IMAGE picks the base (a registry image
# such as python:3.11-slim-bookworm); unset, compose/build-base-image.sh builds
# beanrouter-base:bookworm by debootstrap (cached). PYTHON: the Python that builds the wheels.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if_engine=0 force=0
for arg in "$@"; do
    case $arg in
        --if-engine) if_engine=1 ;;
        --force) force=1 ;;
        *) echo "usage: compose/build-images.sh [--if-engine] [--force]" >&2; exit 2 ;;
    esac
done

if ! docker info >/dev/null 2>&1; then
    if [ "$if_engine" -eq 1 ]; then
        echo "no Docker engine: cluster images not built (the cluster tests will say so)"
        exit 0
    fi
    echo "build-images: no Docker engine answers (docker info failed)" >&2
    exit 1
fi

image=${BEANROUTER_IMAGE:-beanrouter:local}
bimage=${BEANROUTER_BEANSTALKD_IMAGE:-beanrouter-beanstalkd:local}
if [ -z "${BEANROUTER_BASE_IMAGE:-}" ]; then
    base=beanrouter-base:bookworm
    compose/build-base-image.sh "$base"
else
    base=$BEANROUTER_BASE_IMAGE
fi
if [ -x .venv/bin/python ]; then py=${PYTHON:-.venv/bin/python}; else py=${PYTHON:-python3}; fi

# What the images are built from: the package sources, the build files, the base image.
source_hash=$(
    {
        find beanrouter -name '*.py' -type f | LC_ALL=C sort | xargs sha256sum
        sha256sum pyproject.toml compose/Dockerfile compose/beanstalk-ping
        docker image inspect -f '{{.Id}}' "$base"
    } | sha256sum | cut -c1-16
)
label_of() { docker image inspect -f '{{index .Config.Labels "beanrouter.source"}}' "$1" 2>/dev/null || true; }
if [ "$force" -eq 0 ] && [ "$(label_of "$image")" = "$source_hash" ] \
        && [ "$(label_of "$bimage")" = "$source_hash" ]; then
    echo "images $image and $bimage are up to date (sources $source_hash)"
    exit 0
fi

start=$(date +%s)
echo "wheels: beanrouter and its dependencies -> compose/wheels/"
rm -rf compose/wheels compose/debs
mkdir -p compose/wheels compose/debs
"$py" -m pip wheel --quiet --no-deps --no-build-isolation . -w compose/wheels 2>/dev/null \
    || "$py" -m pip wheel --quiet --no-deps . -w compose/wheels
mapfile -t deps < <("$py" -c '
import tomllib
with open("pyproject.toml", "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["dependencies"]))')
# Wheels for the image's Python (3.11, glibc), whatever Python builds them.
"$py" -m pip download --quiet --disable-pip-version-check --only-binary=:all: --python-version 3.11 --implementation cp \
    --abi cp311 --platform "manylinux2014_$(uname -m)" -d compose/wheels "${deps[@]}"
rm -rf build beanrouter.egg-info

if ! docker run --rm --entrypoint /bin/sh "$base" -c 'command -v beanstalkd' >/dev/null 2>&1; then
    echo "debs: the base has no beanstalkd; taking Debian's package from apt"
    (cd compose/debs && apt-get download beanstalkd)
fi

export DOCKER_BUILDKIT=${DOCKER_BUILDKIT:-0}
for target in beanrouter beanstalkd; do
    tag=$image
    [ "$target" = beanstalkd ] && tag=$bimage
    echo "docker build --target $target -t $tag (BASE_IMAGE=$base)"
    log=$(mktemp)
    if ! docker build -f compose/Dockerfile --target "$target" --build-arg "BASE_IMAGE=$base" \
            --label "beanrouter.source=$source_hash" -t "$tag" compose >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        echo "build-images: docker build --target $target failed" >&2
        exit 1
    fi
    rm -f "$log"
done
echo "built $image and $bimage in $(($(date +%s) - start)) s (sources $source_hash)"
