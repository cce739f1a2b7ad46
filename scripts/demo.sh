#!/usr/bin/env bash
# End-to-end demo through `byoc local`: demo data -> training container -> serving container -> predictions.
#
# usage: scripts/demo.sh          (`make demo` builds the venv and the images first)
#
# Writes the embedded handwritten-digits dataset, trains a small ResNet-18 on it in the training
# image (quick settings: `byoc local train`), then serves the model with byoc-serve on 127.0.0.1 and
# prints the top-3 labels, scores and latency of one held-out test image per class
# (`byoc local predict MODEL_DIR ...` serves the model for the duration, then stops it with SIGTERM).
set -euo pipefail
cd "$(dirname "$0")/.."

TRAIN_IMAGE="${BYOC_TRAIN_IMAGE:-byoc-train:latest}"
SERVE_IMAGE="${BYOC_SERVE_IMAGE:-byoc-serve:latest}"
BYOC="${BYOC:-.venv/bin/byoc}"
HPS=(--hp arch=resnet18 --hp image-size=32 --hp pretrained=false --hp epochs=10 --hp batch-size=64
     --hp lr=0.003 --hp num-workers=1)

scripts/ensure_docker.sh
work="$(mktemp -d /tmp/byoc-demo.XXXXXX)"
# Files written by the containers belong to root inside them: remove them from a container.
trap 'docker run --rm --network none -v "$work:/work" --entrypoint rm "$TRAIN_IMAGE" -rf /work/train >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

echo "== 1/3 demo data (scikit-learn's handwritten digits)"
"$BYOC" demo-data "$work/data"

echo "== 2/3 training: byoc local train ${HPS[*]}"
"$BYOC" local train --data "$work/data" --output "$work/train" --image "$TRAIN_IMAGE" "${HPS[@]}"

echo "== 3/3 predictions for held-out test images: byoc local predict"
images=()
for class in "$work/data/test"/*/; do
    images+=("$(find "$class" -name '*.png' | sort | head -1)")
done
"$BYOC" local predict "$work/train/model" "${images[@]}" --image "$SERVE_IMAGE"
