"""Image sizes against AWS's published PyTorch Deep Learning Container sizes."""

from __future__ import annotations

from bench import containers

# Uncompressed sizes of AWS's PyTorch DLCs (GPU) as AWS publishes them (available_images.md and
# the ECR listings): training 15-23 GB depending on version and CUDA, inference about 13.5 GB.
DLC_TRAINING_GB = 15.0  # the smallest: the target (half of it) is the strictest
DLC_INFERENCE_GB = 13.5
# byoc-serve:cpu has no torch (ONNX Runtime): well under a gigabyte.
CPU_SERVING_TARGET_GB = 0.6

IMAGES = {
    "training (GPU-capable)": ("byoc-train:latest", DLC_TRAINING_GB / 2),
    "serving (GPU-capable)": ("byoc-serve:latest", DLC_INFERENCE_GB / 2),
    "serving (CPU-only)": ("byoc-serve:cpu", CPU_SERVING_TARGET_GB),
    "TorchServe comparison": ("byoc-torchserve:latest", None),
    "Ray Serve comparison (torch and ONNX Runtime)": ("byoc-rayserve:latest", None),
    "LitServe comparison (torch and ONNX Runtime)": ("byoc-litserve:latest", None),
}


def run() -> list[dict]:
    rows = []
    for what, (image, target) in IMAGES.items():
        size = containers.image_size(image)
        rows.append({"image": image, "what": what, "gb": round(size / 1e9, 2) if size else None, "target_gb": target})
    return rows
