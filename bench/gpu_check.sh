#!/usr/bin/env bash
# The GPU check (bench/gpu_check.py) from the source tree: no Docker, no install, no network.
# usage: bench/gpu_check.sh [--device cuda|cpu] [--quick] [--out FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHONPATH="src:.${PYTHONPATH:+:$PYTHONPATH}" exec "${PYTHON:-python3}" -m bench.gpu_check "$@"
