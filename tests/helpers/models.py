"""Models for the tests: untrained artifacts written in seconds (the `model_dir` fixture and its
factory), and the settings of a quick training run in-process."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

# An in-process training run (byoc.training.train.run) on the small demo data in seconds.
QUICK = dict(
    arch="resnet18",
    image_size=16,
    pretrained=False,
    epochs=2,
    batch_size=32,
    lr=3e-3,
    num_workers=0,
    log_every=5,
    amp="off",
    channels_last="false",  # fixed: "auto" picks by timing, which may differ run to run
    export_int8=False,  # tests/test_quantize.py covers the INT8 copy; model.onnx is still written
)


def untrained_artifact(
    path: Path, labels: Sequence[str], moved_batch_norm: bool = False, metrics: dict | None = None
) -> Path:
    """An untrained resnet18 artifact for 32x32 images at `path` (model.pt, model.ts, model.json), the
    same weights every run. `moved_batch_norm`: batch-norm running statistics off their defaults (0
    and 1), so that a copy that lost them answers differently; `metrics`: model.json's record of them."""
    import torch  # here, not at import: conftest loads this module for every test, AWS-only ones too

    from byoc.core import architecture, artifact

    torch.manual_seed(0)
    net = architecture.build("resnet18", len(labels)).eval()
    if moved_batch_norm:
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    meta = artifact.ModelMeta(arch="resnet18", labels=list(labels), preprocessing=artifact.Preprocessing.for_size(32))
    if metrics is not None:
        meta.metrics = metrics
    artifact.save(path, net, meta)
    return path


@pytest.fixture(scope="module")
def model_dir(request, tmp_path_factory) -> Path:
    """An untrained artifact (untrained_artifact) with one class for each of the test module's LABELS
    (three when it names none). One per module: a module may add files to it (ONNX copies)."""
    labels = getattr(request.module, "LABELS", ("a", "b", "c"))
    return untrained_artifact(tmp_path_factory.mktemp("model") / "model", labels)
