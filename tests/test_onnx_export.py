"""byoc.core.onnx_export: a tiny resnet18 artifact exported, checked by ONNX Runtime, recorded in
model.json so that the artifact still loads as before."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from byoc.core import artifact, onnx_export
from byoc.core.errors import ArtifactError
from byoc.training import model
from tests.helpers.models import untrained_artifact


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """An untrained artifact whose batch-norm statistics are off their defaults, so that an export that
    dropped them would answer differently, and whose model.json records metrics, which it must keep."""
    return untrained_artifact(
        tmp_path_factory.mktemp("model"), ["a", "b", "c"], moved_batch_norm=True, metrics={"val_acc": 0.5}
    )


@pytest.fixture(scope="module")
def exported(model_dir):
    before = json.loads((model_dir / artifact.META_FILE).read_text())
    return onnx_export.export(model_dir), before


def test_export_writes_a_valid_model_with_a_dynamic_batch(exported):
    path, _ = exported
    assert path.name == "model.onnx" and path.is_file()
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert {o.domain: o.version for o in proto.opset_import}[""] == onnx_export.OPSET
    batch = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param == "batch" and not batch.HasField("dim_value")


def test_onnx_runtime_agrees_with_torch(exported, model_dir):
    path, _ = exported
    net, _ = artifact.load(model_dir, torchscript=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 2, 5):  # sizes other than those export() checked
        x = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(n))
        with torch.no_grad():
            expected = torch.softmax(net(x), dim=1).numpy()
        got = torch.softmax(torch.from_numpy(session.run(None, {"input": x.numpy()})[0]), dim=1).numpy()
        assert np.abs(got - expected).max() <= onnx_export.MAX_SOFTMAX_DIFF


def test_recorded_without_breaking_older_readers(exported, model_dir):
    path, before = exported
    doc = json.loads((model_dir / artifact.META_FILE).read_text())
    entry = doc.pop("onnx")
    before.pop("onnx", None)  # null, or absent in an artifact saved before ModelMeta had the field
    assert doc == before  # every other key as it was: format_version, torchscript, metrics, ...
    assert entry["file"] == path.name and entry["opset"] == onnx_export.OPSET
    assert 0 <= entry["softmax_diff"] <= onnx_export.MAX_SOFTMAX_DIFF
    assert onnx_export.recorded(model_dir) == entry
    # What a format_version 1 server does: from_json ignores the key, and both copies still load.
    meta = artifact.read_meta(model_dir)
    assert meta.labels == ["a", "b", "c"] and meta.torchscript == "model.ts"
    artifact.load(model_dir)
    artifact.load(model_dir, torchscript=False)


def test_no_entry_and_a_foreign_file_name(model_dir, tmp_path):
    doc = json.loads((model_dir / artifact.META_FILE).read_text())
    doc.pop("onnx", None)
    (tmp_path / artifact.META_FILE).write_text(json.dumps(doc))
    assert onnx_export.recorded(tmp_path) is None
    (tmp_path / artifact.META_FILE).write_text(json.dumps(doc | {"onnx": {"file": "../etc/passwd"}}))
    with pytest.raises(ArtifactError, match="file name in the model directory"):
        onnx_export.recorded(tmp_path)


def test_a_model_onnx_runtime_does_not_reproduce_is_refused(model_dir, monkeypatch):
    """The check compares with torch: an export of other weights fails it, and nothing is written."""
    net, meta = artifact.load(model_dir, torchscript=False)
    other = model.build("resnet18", 3).eval()
    data = onnx_export._to_onnx(other, 32)
    with pytest.raises(ArtifactError, match="softmax is .* from torch's"):
        onnx_export.check(data, net, 32)
    monkeypatch.setattr(onnx_export, "_to_onnx", lambda net, size: data)
    out = model_dir / "model.onnx"
    before = out.read_bytes() if out.exists() else None
    with pytest.raises(ArtifactError):
        onnx_export.export(model_dir)
    assert (out.read_bytes() if out.exists() else None) == before


def test_an_unloadable_export_is_refused(model_dir):
    net, _ = artifact.load(model_dir, torchscript=False)
    with pytest.raises(ArtifactError, match="does not load"):
        onnx_export.check(b"not onnx", net, 32)


def test_record_sets_and_removes_one_key_only(model_dir, tmp_path):
    """The one rewrite of model.json that the ONNX and INT8 copies share (byoc.core.quantize uses it too)."""
    (tmp_path / artifact.META_FILE).write_bytes((model_dir / artifact.META_FILE).read_bytes())
    before = json.loads((tmp_path / artifact.META_FILE).read_text())
    onnx_export.record(tmp_path, "int8", {"file": "model.int8.onnx"})
    assert onnx_export.recorded(tmp_path, "int8") == {"file": "model.int8.onnx"}
    onnx_export.record(tmp_path, "int8", None)
    onnx_export.record(tmp_path, "int8", None)  # removing what is not there is no error
    before.pop("int8", None)  # null when saved by a ModelMeta with the field: removed, not nulled
    assert json.loads((tmp_path / artifact.META_FILE).read_text()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [artifact.META_FILE]  # no temporary file left
