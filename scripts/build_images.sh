#!/usr/bin/env bash
# Build the byoc images: byoc-train:latest, byoc-serve:latest and byoc-serve:cpu.
#
# usage: scripts/build_images.sh [train|serve|cpu|all|torchserve|rayserve|litserve] [extra docker build args...]
#        (cpu: byoc-serve:cpu, the torch-free CPU serving image: docker/serve/Dockerfile with
#         TORCH_REQUIREMENTS=onnx-cpu.txt; all: train, serve and cpu;
#         torchserve, rayserve, litserve: byoc-torchserve:latest, byoc-rayserve:latest and
#         byoc-litserve:latest, bench/'s comparison images (docker/bench/); not in `all`)
#
# Environment:
#   BASE_IMAGE        base for both images (default python:3.11-slim-bookworm). When it
#                     is not on this machine and cannot be pulled (no registry, air-gapped),
#                     an equivalent Debian bookworm + Python 3.11 base is built locally with
#                     debootstrap (scripts/local_base_image.sh).
#   PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_TRUSTED_HOST
#                     passed through to pip inside the build (mirrors).
#   BYOC_WHEELHOUSE   space-separated local wheel directories: PEP 503 mirrors (DIR/simple/...)
#                     or flat folders of .whl files (a simple index is generated for those);
#                     each is served on 127.0.0.1 during the build and added to
#                     PIP_EXTRA_INDEX_URL. Default: /opt/pypi-more, /opt/pypi and /opt/wheels
#                     where present.
#   TAG               image tag (default latest; the CPU image is TAG-cpu, or cpu for latest)
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
    if compgen -G "/opt/wheels/*.whl" >/dev/null; then BYOC_WHEELHOUSE="$BYOC_WHEELHOUSE /opt/wheels"; fi
fi
extra_index="${PIP_EXTRA_INDEX_URL:-}"
simple_index() {  # simple_index WHEEL_DIR OUT: a PEP 503 index OUT/simple/ over a flat folder of wheels
    local dir="$1" out="$2" whl file project
    mkdir -p "$out/files" "$out/simple"
    for whl in "$dir"/*.whl; do
        [ -e "$whl" ] || continue
        file="$(basename "$whl")"
        project="$(echo "${file%%-*}" | tr 'A-Z_.' 'a-z--')"
        ln -sf "$whl" "$out/files/$file"
        mkdir -p "$out/simple/$project"
        echo "<a href=\"../../files/${file//+/%2B}\">$file</a><br>" >>"$out/simple/$project/index.html"
    done
}
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
        if [ -d "$d/simple" ]; then
            ln -s "$d" "$root/$i"
        else
            simple_index "$d" "$root/$i"
        fi
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

build_cpu() {  # byoc-serve:cpu: the serving Dockerfile with ONNX Runtime in place of torch
    local cpu_tag="cpu"
    [ "$TAG" != "latest" ] && cpu_tag="$TAG-cpu"
    TAG="$cpu_tag" build byoc-serve docker/serve/Dockerfile --build-arg TORCH_REQUIREMENTS=onnx-cpu.txt "$@"
}

case "$what" in
    train) build byoc-train docker/train/Dockerfile "$@" ;;
    serve) build byoc-serve docker/serve/Dockerfile "$@" ;;
    cpu) build_cpu "$@" ;;
    all) build byoc-train docker/train/Dockerfile "$@"; build byoc-serve docker/serve/Dockerfile "$@"
         build_cpu "$@" ;;
    torchserve) build byoc-torchserve docker/bench/torchserve/Dockerfile "$@" ;;
    rayserve|litserve) build "byoc-$what" docker/bench/peer.Dockerfile --build-arg "PEER=$what" "$@" ;;
    *) echo "usage: $0 [train|serve|cpu|all|torchserve|rayserve|litserve]" >&2; exit 2 ;;
esac
docker image prune -f >/dev/null 2>&1 || true
