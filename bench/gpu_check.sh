#!/usr/bin/env bash
# The GPU check (bench/gpu_check.py) from the source tree: no Docker, no install, no network; needs
# only python3 with torch and torchvision (numpy and Pillow come with torchvision).
#
# On a lent GPU machine (carry nothing: the tracked tree is enough), from the repository root:
#     bash bench/gpu_check.sh --out $OUT/gpu.json
# about 4-6 minutes on one GPU (keep the run's limit at 8); $OUT/gpu.json holds every part that
# finished even if a later one dies, and the markdown table is printed at the end
# (`bash bench/gpu_check.sh --table FILE` prints it again from the file).
#
# usage: bench/gpu_check.sh [--device cuda|cpu] [--quick] [--out FILE] [--table FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHONPATH="src:.${PYTHONPATH:+:$PYTHONPATH}" exec "${PYTHON:-python3}" -m bench.gpu_check "$@"
