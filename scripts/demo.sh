#!/usr/bin/env bash
# End-to-end demo: demo data -> training container -> serving container -> predictions.
#
# usage: scripts/demo.sh          (`make demo` builds the images first)
#
# Writes the embedded handwritten-digits dataset inside the training image, trains a small
# ResNet-18 on it (quick settings), serves the model with byoc-serve on 127.0.0.1, posts a
# few held-out test images and prints the top-3 labels, scores and latency of each. The host
# needs only Docker and python3 (standard library). Everything is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

TRAIN_IMAGE="${BYOC_TRAIN_IMAGE:-byoc-train:latest}"
SERVE_IMAGE="${BYOC_SERVE_IMAGE:-byoc-serve:latest}"
HPS=(--arch resnet18 --image-size 32 --pretrained false --epochs 10 --batch-size 64 --lr 0.003 --num-workers 1)

scripts/ensure_docker.sh
for image in "$TRAIN_IMAGE" "$SERVE_IMAGE"; do
    docker image inspect "$image" >/dev/null 2>&1 || scripts/build_images.sh all
done

work="$(mktemp -d /tmp/byoc-demo.XXXXXX)"
server="byoc-demo-serve-$$"
cleanup() {
    docker stop -t 30 "$server" >/dev/null 2>&1 || true
    docker rm -f "$server" >/dev/null 2>&1 || true
    # Files written by the containers belong to root inside them: remove them from a container.
    docker run --rm --network none -v "$work:/work" --entrypoint rm "$TRAIN_IMAGE" -rf /work/opt_ml >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

opt_ml="$work/opt_ml"
mkdir -p "$opt_ml/input/data" "$opt_ml/model" "$opt_ml/output"
chmod -R 777 "$opt_ml"

echo "== 1/4 demo data (scikit-learn's handwritten digits) in the training image"
docker run --rm --network none -v "$opt_ml:/opt/ml" "$TRAIN_IMAGE" byoc demo-data /opt/ml/input/data/training

echo "== 2/4 training: ${HPS[*]}"
docker run --rm --network none --hostname algo-1 --add-host algo-1:127.0.0.1 --shm-size 1g \
    -v "$opt_ml:/opt/ml" "$TRAIN_IMAGE" train "${HPS[@]}"
python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print("test_accuracy:", m.get("test_accuracy"))' \
    "$opt_ml/output/data/metrics.json"

echo "== 3/4 serving the model on 127.0.0.1"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
docker run -d --name "$server" --network host -v "$opt_ml/model:/opt/ml/model:ro" \
    -e SAGEMAKER_BIND_TO_PORT="$port" -e BYOC_BIND_HOST=127.0.0.1 "$SERVE_IMAGE" serve >/dev/null

echo "== 4/4 predictions for held-out test images (POST /invocations)"
python3 - "$port" "$opt_ml/input/data/training/test" "$server" <<'PY'
import json, subprocess, sys, time, urllib.error, urllib.request
from pathlib import Path

port, test_dir, server = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
base = f"http://127.0.0.1:{port}"
deadline = time.monotonic() + 300
while True:
    try:
        with urllib.request.urlopen(base + "/ping", timeout=2) as resp:
            if resp.status == 200:
                break
    except OSError:
        pass
    running = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", server], capture_output=True, text=True)
    if running.stdout.strip() != "true" or time.monotonic() > deadline:
        sys.exit("the serving container did not become healthy:\n"
                 + subprocess.run(["docker", "logs", "--tail", "30", server], capture_output=True, text=True).stderr)
    time.sleep(0.5)

classes = sorted(p for p in test_dir.iterdir() if p.is_dir())
picks = [sorted(c.glob("*.png"))[0] for c in classes[::2]] + [sorted(classes[1].glob("*.png"))[1]]
correct = 0
for path in picks:
    truth = path.parent.name.split(".", 1)[1]
    req = urllib.request.Request(base + "/invocations", data=path.read_bytes(), method="POST",
                                 headers={"Content-Type": "image/png", "X-Amzn-SageMaker-Custom-Attributes": "top_k=3"})
    start = time.perf_counter()
    with urllib.request.urlopen(req, timeout=30) as resp:
        preds = json.loads(resp.read())["predictions"]
    ms = (time.perf_counter() - start) * 1e3
    correct += preds[0]["label"] == truth
    top3 = ", ".join(f"{p['label']} {p['score']:.3f}" for p in preds)
    name = f"{path.parent.name}/{path.name}"
    print(f"{name:26s} true={truth:6s} top-3: {top3:44s} {ms:6.1f} ms")
print(f"{correct}/{len(picks)} top-1 correct")
PY
echo "== done: stopping the server (SIGTERM) and cleaning up"
