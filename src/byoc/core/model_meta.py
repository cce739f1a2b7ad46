"""An artifact's model.json: what every image reads first, with or without torch.

model.json names the architecture, the labels, the `Preprocessing`, the metrics and the copies of
the model the directory holds: the TorchScript file (`torchscript`), the ONNX copy (`onnx`, written
by byoc.core.onnx_export) and its INT8 copy (`int8`, written by byoc.core.quantize), and how the
TorchScript copy scores in half precision (`half`, written by byoc.core.half_precision). Only the
standard library and Pillow (through byoc.core.images): the CPU serving image has no torch, and
`byoc.core.artifact` (the torch side) re-exports all of it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from byoc.core.errors import ArtifactError
from byoc.core.images import Preprocessing

FORMAT = "byoc-image-classifier"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.pt"
META_FILE = "model.json"
TORCHSCRIPT_FILE = "model.ts"


@dataclass
class ModelMeta:
    arch: str
    labels: list[str]
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    metrics: dict[str, Any] = field(default_factory=dict)
    created_with: dict[str, str] = field(default_factory=dict)
    torchscript: str | None = None  # file name of the TorchScript copy, None when there is none
    # The ONNX copy ({"file": "model.onnx", "opset", "input", "output", ...}) and its INT8 copy
    # ({"file": "model.int8.onnx", "runtime", "top1_fp32", "top1_int8", ...}); None when absent.
    onnx: dict[str, Any] | None = None
    int8: dict[str, Any] | None = None
    # How the TorchScript copy scored in half precision on a GPU against fp32 ({"top1_fp32",
    # "max_drop", "fp16": {"top1", ...}, "bf16": {...}}: byoc.core.half_precision); None: never measured.
    half: dict[str, Any] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def to_json(self) -> dict[str, Any]:
        doc = {"format": FORMAT, "format_version": FORMAT_VERSION, "num_classes": self.num_classes}
        doc.update(asdict(self))
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ModelMeta:
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
                torchscript=doc.get("torchscript"),
                onnx=_copy_entry(doc, "onnx"),
                int8=_copy_entry(doc, "int8"),
                half=_half_entry(doc),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{META_FILE} is malformed: {type(exc).__name__}: {exc}") from exc
        if not meta.labels:
            raise ArtifactError(f"{META_FILE} lists no labels")
        if meta.torchscript is not None and not _is_file_name(meta.torchscript):
            raise ArtifactError(
                f"{META_FILE}: torchscript must be a file name in the model directory, not {meta.torchscript!r}"
            )
        return meta


def _copy_entry(doc: dict[str, Any], key: str) -> dict[str, Any] | None:
    """model.json's `key` entry (a copy of the model: "onnx", "int8"), its "file" a name in the model dir."""
    entry = doc.get(key)
    if entry is None:
        return None
    name = entry.get("file") if isinstance(entry, dict) else None
    if not _is_file_name(name):
        raise ArtifactError(f"{META_FILE}: {key}.file must be a file name in the model directory, not {name!r}")
    return dict(entry)


def _half_entry(doc: dict[str, Any]) -> dict[str, Any] | None:
    """model.json's "half" entry (a JSON object, or absent)."""
    entry = doc.get("half")
    if entry is not None and not isinstance(entry, dict):
        raise ArtifactError(f"{META_FILE}: half must be an object, not {type(entry).__name__}")
    return None if entry is None else dict(entry)


def _is_file_name(name: object) -> bool:
    return isinstance(name, str) and bool(name) and Path(name).name == name and name not in (".", "..")


def read_meta(model_dir: Path) -> ModelMeta:
    """The artifact's model.json (raises ArtifactError with a one-line reason)."""
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
