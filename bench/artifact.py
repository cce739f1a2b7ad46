"""The benchmarked model: ResNet-50 at 224 px with 133 classes (the dog-breed task), random
weights, as a byoc artifact (with its ONNX copies, fp32 and INT8, for byoc-serve:cpu) and as a
TorchServe model archive of the same weights."""

from __future__ import annotations

import json
import logging
import random
import shutil
import subprocess
import sys
from pathlib import Path

log = logging.getLogger("bench")
ARCH = "resnet50"
CLASSES = 133
IMAGE_SIZE = 224

# The stock image_classifier handler needs an eager model class; same layout as torchvision's.
TS_MODEL_FILE = f"""\
from torchvision.models.resnet import Bottleneck, ResNet


class ResNet50Dogs(ResNet):
    def __init__(self):
        super().__init__(Bottleneck, [3, 4, 6, 3], num_classes={CLASSES})
"""


def labels() -> list[str]:
    return [f"breed_{i:03d}" for i in range(CLASSES)]


def write_byoc(model_dir: Path, arch: str = ARCH, image_size: int = IMAGE_SIZE, seed: int = 0) -> Path:
    """A byoc model directory (model.pt + model.json) with seeded random weights."""
    import torch

    from byoc.core import artifact
    from byoc.training import model

    if all((model_dir / f).is_file() for f in (artifact.META_FILE, artifact.WEIGHTS_FILE, artifact.TORCHSCRIPT_FILE)):
        return model_dir
    torch.manual_seed(seed)
    net = model.build(arch, CLASSES)
    meta = artifact.ModelMeta(arch=arch, labels=labels(), preprocessing=artifact.Preprocessing.for_size(image_size))
    artifact.save(model_dir, net, meta)
    return model_dir


# Random weights answer at random: the INT8 copy's ranges matter here, its top-1 does not (the
# precision benchmark scores top-1 on the trained demo model instead), so no drop refuses it.
RANDOM_WEIGHTS_MAX_DROP = 100.0
CALIBRATION_IMAGES = 64


def write_served(work: Path) -> Path:
    """The benchmarked artifact as both serving images serve it: `work`/model with model.onnx and
    model.int8.onnx (calibrated on crops of the payload photograph)."""
    model_dir = write_byoc(work / "model")
    calibration = write_calibration(work / "calibration", CALIBRATION_IMAGES)
    return add_onnx_copies(
        model_dir, calibration, max_drop=RANDOM_WEIGHTS_MAX_DROP, calibration_images=CALIBRATION_IMAGES
    )


def add_onnx_copies(model_dir: Path, calibration: Path, **quantize_args) -> Path:
    """`model_dir` with the ONNX copies byoc-serve:cpu serves (model.onnx, and model.int8.onnx
    calibrated on the class folders in `calibration` by `byoc.core.quantize.quantize(**quantize_args)`),
    made on this host where model.json records none."""
    try:
        from byoc.core import onnx_export, quantize
    except ImportError as exc:
        raise RuntimeError(
            f"cannot add ONNX copies to {model_dir}: {exc} (pip install -e '.[onnx]' installs the ONNX export)"
        ) from exc
    if onnx_export.recorded(model_dir) is None:
        onnx_export.export(model_dir)
    if onnx_export.recorded(model_dir, quantize.META_KEY) is None:
        log.info("quantizing %s (calibration: %s)", model_dir, calibration)
        if quantize.quantize(model_dir, calibration, **quantize_args) is None:
            raise RuntimeError(f"{model_dir}: byoc.core.quantize refused the INT8 copy (top-1 drop over its bound)")
    return model_dir


def write_calibration(out: Path, images: int, size: int = 256, seed: int = 0) -> Path:
    """`images` JPEG crops of the payload photograph in one class folder named after the first label."""
    from PIL import Image

    from bench import payloads

    folder = out / labels()[0]
    if len(list(folder.glob("*.jpg"))) >= images:
        return out
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    src = payloads.photo()
    for i in range(images):
        side = rng.randint(size // 2, min(src.size))
        x, y = rng.randint(0, src.width - side), rng.randint(0, src.height - side)
        crop = src.crop((x, y, x + side, y + side)).resize((size, size), Image.Resampling.BILINEAR)
        crop.save(folder / f"crop_{i:03d}.jpg", quality=payloads.QUALITY)
    return out


def write_mar(model_dir: Path, out_dir: Path, name: str = "model") -> Path:
    """`torch-model-archiver` over the same weights, stock `image_classifier` handler."""
    out_dir.mkdir(parents=True, exist_ok=True)
    mar = out_dir / f"{name}.mar"
    if mar.is_file():
        return mar
    work = out_dir / "mar-src"
    work.mkdir(exist_ok=True)
    (work / "model.py").write_text(TS_MODEL_FILE)
    (work / "index_to_name.json").write_text(json.dumps({str(i): label for i, label in enumerate(labels())}))
    archiver = Path(sys.executable).with_name("torch-model-archiver")
    subprocess.run(
        [
            str(archiver),
            "--model-name",
            name,
            "--version",
            "1.0",
            "--model-file",
            str(work / "model.py"),
            "--serialized-file",
            str(model_dir / "model.pt"),
            "--handler",
            "image_classifier",
            "--extra-files",
            str(work / "index_to_name.json"),
            "--export-path",
            str(out_dir),
            "--force",
        ],
        check=True,
    )
    shutil.rmtree(work)
    return mar
