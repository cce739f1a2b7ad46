#!/usr/bin/env bash
# Build the byoc images: byoc-train:latest and byoc-serve:latest.
#
# usage: scripts/build_images.sh [train|serve|all|torchserve] [extra docker build args...]
#        (torchserve: byoc-torchserve:latest, bench/'s TorchServe comparison image; not in `all`)
#
# Environment:
#   BASE_IMAGE        base for both images (default python:3.11-slim-bookworm). When it
#                     is not on this machine and cannot be pulled (no registry, air-gapped),
#                     an equivalent Debian bookworm + Python 3.11 base is built locally with
#                     debootstrap (scripts/local_base_image.sh).
#   PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_TRUSTED_HOST
#                     passed through to pip inside the build (mirrors).
#   BYOC_WHEELHOUSE   space-separated local PEP 503 "simple" directories (e.g. a wheel mirror
#                     on disk); each is served on 127.0.0.1 during the build and added to
#                     PIP_EXTRA_INDEX_URL. Default: the ones under /opt/pypi* if present.
#   TAG               image tag (default latest)
set -euo pipefail
cd "$(dirname "$0")/.."

what="${1:-all}"; shift || true
TAG="${TAG:-latest}"
BASE_IMAGE="${BASE_IMAGE:-python:3.11-slim-bookworm}"
LOCAL_BASE="byoc-base-local:bookworm"

scripts/ensure_docker.sh

if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    if [ "$BASE_IMAGE" != "$LOCAL_BASE" ] && timeout 120 docker pull -q "$BASE_IMAGE" >/dev/null 2>&1; then
        echo "pulled $BASE_IMAGE"
    else
        echo "$BASE_IMAGE cannot be pulled here: using a locally built Debian bookworm base ($LOCAL_BASE)"
        scripts/local_base_image.sh "$LOCAL_BASE"
        BASE_IMAGE="$LOCAL_BASE"
    fi
fi

if [ -z "${BYOC_WHEELHOUSE+x}" ]; then
    BYOC_WHEELHOUSE=""
    for d in /opt/pypi-more /opt/pypi; do [ -d "$d/simple" ] && BYOC_WHEELHOUSE="$BYOC_WHEELHOUSE $d"; done
fi
extra_index="${PIP_EXTRA_INDEX_URL:-}"
server_pid=""
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true; }
trap cleanup EXIT
if [ -n "${BYOC_WHEELHOUSE// /}" ]; then
    # A fixed port keeps the build arg, and so Docker's layer cache, stable across builds.
    port="${BYOC_WHEELHOUSE_PORT:-8765}"
    root="/tmp/byoc-wheelhouse"
    rm -rf "$root"; mkdir -p "$root"
    i=0
    for d in $BYOC_WHEELHOUSE; do
        ln -s "$d" "$root/$i"
        extra_index="$extra_index http://127.0.0.1:$port/$i/simple"
        i=$((i + 1))
    done
    python3 -m http.server "$port" --bind 127.0.0.1 --directory "$root" >/dev/null 2>&1 &
    server_pid=$!
    sleep 1
    echo "serving local wheels ($BYOC_WHEELHOUSE) on 127.0.0.1:$port for the build"
fi

pip_args=()
[ -n "${PIP_INDEX_URL:-}" ] && pip_args+=(--build-arg "PIP_INDEX_URL=$PIP_INDEX_URL")
[ -n "${extra_index// /}" ] && pip_args+=(--build-arg "PIP_EXTRA_INDEX_URL=${extra_index# }")
[ -n "${PIP_TRUSTED_HOST:-}" ] && pip_args+=(--build-arg "PIP_TRUSTED_HOST=$PIP_TRUSTED_HOST")

build() {  # build NAME DOCKERFILE [docker build args]
    local name="$1" dockerfile="$2"; shift 2
    echo "building $name:$TAG from $dockerfile (base $BASE_IMAGE)"
    docker build --network host -f "$dockerfile" -t "$name:$TAG" \
        --build-arg BASE_IMAGE="$BASE_IMAGE" "${pip_args[@]}" "$@" .
}

case "$what" in
    train) build byoc-train docker/train/Dockerfile "$@" ;;
    serve) build byoc-serve docker/serve/Dockerfile "$@" ;;
    all) build byoc-train docker/train/Dockerfile "$@"; build byoc-serve docker/serve/Dockerfile "$@" ;;
    torchserve) build byoc-torchserve docker/bench/torchserve/Dockerfile "$@" ;;
    *) echo "usage: $0 [train|serve|all|torchserve]" >&2; exit 2 ;;
esac
docker image prune -f >/dev/null 2>&1 || true
