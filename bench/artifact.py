"""The benchmarked model: ResNet-50 at 224 px with 133 classes (the dog-breed task), random
weights, as a byoc artifact and as a TorchServe model archive of the same weights."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

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
