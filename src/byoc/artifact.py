"""The model file format both images share.

A model directory (SageMaker's /opt/ml/model, packed as model.tar.gz) holds:

    model.pt    the state dict (tensors only: loads with weights_only=True)
    model.json  architecture, labels, preprocessing and the training metrics

A server needs torch and torchvision to load it, never the training code.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from byoc.errors import ArtifactError

FORMAT = "byoc-image-classifier"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.pt"
META_FILE = "model.json"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Preprocessing:
    """How an image becomes a tensor: resize the short side, centre-crop, normalise."""

    image_size: int = 224
    resize_size: int = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @classmethod
    def for_size(cls, image_size: int) -> "Preprocessing":
        # torchvision's reference ratio: 224 -> 256
        return cls(image_size=image_size, resize_size=int(round(image_size / 0.875)))


@dataclass
class ModelMeta:
    arch: str
    labels: list[str]
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    metrics: dict[str, Any] = field(default_factory=dict)
    created_with: dict[str, str] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def to_json(self) -> dict[str, Any]:
        doc = {"format": FORMAT, "format_version": FORMAT_VERSION, "num_classes": self.num_classes}
        doc.update(asdict(self))
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> "ModelMeta":
        if doc.get("format") != FORMAT:
            raise ArtifactError(f"{META_FILE} is not a {FORMAT} artifact (format={doc.get('format')!r})")
        if doc.get("format_version") != FORMAT_VERSION:
            raise ArtifactError(
                f"{META_FILE} has format_version {doc.get('format_version')!r}; this server reads "
                f"version {FORMAT_VERSION}: retrain or use a matching byoc-serve image"
            )
        try:
            pre = Preprocessing(**doc.get("preprocessing", {}))
            meta = cls(
                arch=str(doc["arch"]),
                labels=[str(x) for x in doc["labels"]],
                preprocessing=pre,
                metrics=dict(doc.get("metrics", {})),
                created_with=dict(doc.get("created_with", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{META_FILE} is malformed: {type(exc).__name__}: {exc}") from exc
        if not meta.labels:
            raise ArtifactError(f"{META_FILE} lists no labels")
        return meta


def atomic_write(path: Path, write) -> None:
    """Write a file through `write(fh)` so that readers see the old file or the whole new one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".tmp-{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(model_dir: Path, model: nn.Module, meta: ModelMeta) -> None:
    """Write weights and metadata (each atomically) into `model_dir`."""
    import torchvision

    from byoc import __version__

    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    meta.created_with = {"byoc": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(model_dir / WEIGHTS_FILE, lambda fh: torch.save(state, fh))
    text = json.dumps(meta.to_json(), indent=2).encode()
    atomic_write(model_dir / META_FILE, lambda fh: fh.write(text))


def read_meta(model_dir: Path) -> ModelMeta:
    path = Path(model_dir) / META_FILE
    if not path.is_file():
        raise ArtifactError(f"no {META_FILE} in {model_dir}: is this a byoc model directory?")
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ArtifactError(f"{path} does not hold a JSON object")
    return ModelMeta.from_json(doc)


def load(model_dir: Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelMeta]:
    """Load an artifact for inference (eval mode, on `device`). Raises ArtifactError with a one-line reason."""
    from byoc import model as model_factory
    from byoc.errors import ConfigError

    model_dir = Path(model_dir)
    meta = read_meta(model_dir)
    weights = model_dir / WEIGHTS_FILE
    if not weights.is_file():
        raise ArtifactError(f"no {WEIGHTS_FILE} in {model_dir}")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a truncated or foreign file
        raise ArtifactError(f"{weights} is corrupt or not a state dict: {type(exc).__name__}: {exc}".splitlines()[0]) from exc
    try:
        net = model_factory.build(meta.arch, meta.num_classes)
    except ConfigError as exc:
        raise ArtifactError(f"{META_FILE}: {exc}") from exc
    try:
        net.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()
        raise ArtifactError(
            f"{WEIGHTS_FILE} does not match {meta.arch} with {meta.num_classes} classes: "
            f"{first[1].strip() if len(first) > 1 else first[0] if first else exc}"
        ) from exc
    net.eval().to(device)
    return net, meta
