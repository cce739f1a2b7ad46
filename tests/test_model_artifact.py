import json

import pytest
import torch

from byoc.core import artifact
from byoc.core.errors import ArtifactError, ConfigError
from byoc.training import model


@pytest.mark.parametrize(
    "arch, head",
    [
        ("resnet18", "fc"),
        ("mobilenet_v3_small", "classifier.3"),
        ("efficientnet_b0", "classifier.1"),
        ("vit_b_16", "heads.head"),
    ],
)
def test_factory_replaces_head(arch, head):
    net = model.build(arch, 7)
    assert model.head_name(net) == head
    assert net.get_submodule(head).out_features == 7


def test_freeze_backbone_trains_only_the_head():
    net = model.create("resnet18", 3, freeze_backbone=True)
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trainable == {"fc.weight", "fc.bias"}


def test_unknown_arch():
    with pytest.raises(ConfigError, match="unknown arch"):
        model.build("resnet9000", 3)


def test_pretrained_without_network_says_what_to_do(monkeypatch):
    from torchvision.models import ResNet18_Weights

    def offline(self, *a, **k):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(ResNet18_Weights.IMAGENET1K_V1.__class__, "get_state_dict", offline)
    with pytest.raises(ConfigError, match="pretrained=false.*weights"):
        model.create("resnet18", 3, pretrained=True)


def test_weights_file_loads_backbone(tmp_path):
    source = model.build("resnet18", 1000)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    net = model.create("resnet18", 5, weights_file=path)
    assert torch.equal(net.conv1.weight, source.conv1.weight)
    bad = tmp_path / "other.pth"
    torch.save(model.build("mobilenet_v3_small", 1000).state_dict(), bad)
    with pytest.raises(ConfigError, match="do not fit resnet18"):
        model.create("resnet18", 5, weights_file=bad)


def _meta(labels=("a", "b", "c")):
    return artifact.ModelMeta(arch="resnet18", labels=list(labels), preprocessing=artifact.Preprocessing.for_size(32))


def test_artifact_round_trip(tmp_path):
    net = model.build("resnet18", 3).eval()
    artifact.save(tmp_path, net, _meta())
    loaded, meta = artifact.load(tmp_path, torchscript=False)
    assert meta.labels == ["a", "b", "c"] and meta.preprocessing.resize_size == 37
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(net(x), loaded(x))
    doc = json.loads((tmp_path / "model.json").read_text())
    assert doc["format"] == "byoc-image-classifier" and doc["num_classes"] == 3 and "torch" in doc["created_with"]
    assert doc["torchscript"] == "model.ts"


@pytest.mark.parametrize("optimize", [True, False])
def test_torchscript_copy_is_loaded_and_agrees_with_the_weights(tmp_path, optimize):
    net = model.build("resnet18", 3).eval()
    for m in net.modules():  # batch-norm statistics other than the defaults, so optimising folds something
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    artifact.save(tmp_path, net, _meta())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.pt", "model.ts"]
    loaded, meta = artifact.load(tmp_path, optimize=optimize)
    assert isinstance(loaded, torch.jit.ScriptModule) and meta.torchscript == "model.ts"
    x = torch.randn(5, 3, 32, 32)  # another batch size than the trace's
    with torch.inference_mode():
        expected, got = torch.softmax(net(x), 1), torch.softmax(loaded(x), 1)
    # Folded batch norm and oneDNN kernels round differently from the eager model.
    assert (got - expected).abs().max().item() < (1e-4 if optimize else 1e-6)


@pytest.mark.parametrize("arch", ["mobilenet_v3_small", "vit_b_16"])
def test_torchscript_traces_other_architectures(tmp_path, arch):
    size = 224 if arch == "vit_b_16" else 64
    net = model.build(arch, 4).eval()
    meta = artifact.ModelMeta(arch=arch, labels=list("abcd"), preprocessing=artifact.Preprocessing.for_size(size))
    artifact.save(tmp_path, net, meta)
    loaded, _ = artifact.load(tmp_path)
    x = torch.randn(3, 3, size, size)
    with torch.inference_mode():
        assert torch.allclose(loaded(x), net(x), atol=1e-4)


def test_artifact_without_torchscript_loads_from_the_weights(tmp_path, caplog):
    """An artifact written before model.ts existed, and one whose model.ts went missing."""
    net = model.build("resnet18", 3).eval()
    artifact.save(tmp_path, net, _meta())
    (tmp_path / "model.ts").unlink()
    loaded, _ = artifact.load(tmp_path)
    assert not isinstance(loaded, torch.jit.ScriptModule)
    assert "model.ts, which is missing" in caplog.text
    doc = json.loads((tmp_path / "model.json").read_text())
    del doc["torchscript"]
    (tmp_path / "model.json").write_text(json.dumps(doc))
    loaded, meta = artifact.load(tmp_path)
    assert meta.torchscript is None and not isinstance(loaded, torch.jit.ScriptModule)


def test_without_torchscript_or_torchvision_the_error_says_what_to_do(tmp_path, monkeypatch):
    import sys

    artifact.save(tmp_path, model.build("resnet18", 3), _meta())
    (tmp_path / "model.ts").unlink()
    monkeypatch.setitem(sys.modules, "byoc.core.architecture", None)  # import -> ImportError, as without torchvision
    with pytest.raises(ArtifactError, match="no TorchScript copy .*byoc-serve:latest") as err:
        artifact.load(tmp_path)
    assert "\n" not in str(err.value)


def test_a_model_that_does_not_trace_is_saved_without_torchscript(tmp_path, monkeypatch, caplog):
    def untraceable(net, image_size):
        raise RuntimeError("Tracer cannot infer type of output\nsecond line")

    monkeypatch.setattr(artifact, "to_torchscript", untraceable)
    (tmp_path / "model.ts").write_bytes(b"stale copy of an older model")
    artifact.save(tmp_path, model.build("resnet18", 3), _meta())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.pt"]
    assert json.loads((tmp_path / "model.json").read_text())["torchscript"] is None
    assert "no TorchScript copy of resnet18 (RuntimeError: Tracer cannot infer type of output)" in caplog.text
    loaded, _ = artifact.load(tmp_path)
    assert not isinstance(loaded, torch.jit.ScriptModule)


def _other_torchscript(d):
    net = model.build("resnet18", 5).eval()
    torch.jit.save(torch.jit.trace(net, torch.zeros(1, 3, 32, 32)), str(d / "model.ts"))


@pytest.mark.parametrize(
    "damage, message, torchscript",
    [
        (lambda d: (d / "model.json").unlink(), "no model.json", True),
        (lambda d: (d / "model.pt").unlink(), "no model.pt", False),
        (lambda d: (d / "model.pt").write_bytes(b"garbage"), "corrupt", False),
        (lambda d: (d / "model.json").write_text("{"), "not valid JSON", True),
        (lambda d: (d / "model.json").write_text(json.dumps({"format": "other"})), "not a byoc-image-classifier", True),
        (
            lambda d: (d / "model.json").write_text((d / "model.json").read_text().replace('"c"', '"c", "d"')),
            "does not match",
            False,
        ),
        (
            lambda d: (d / "model.json").write_text((d / "model.json").read_text().replace('"c"', '"c", "d"')),
            "does not match",
            True,
        ),
        (lambda d: (d / "model.ts").write_bytes(b"garbage"), "corrupt or not TorchScript", True),
        (
            lambda d: (d / "model.ts").write_bytes((d / "model.ts").read_bytes()[:5000]),
            "corrupt or not TorchScript",
            True,
        ),
        (_other_torchscript, "outputs \\[1, 5\\] for one image, model.json lists 3 labels", True),
        (
            lambda d: (d / "model.json").write_text(
                (d / "model.json").read_text().replace('"model.ts"', '"../model.ts"')
            ),
            "file name in the model directory",
            True,
        ),
    ],
)
def test_broken_artifacts_give_one_line_reasons(tmp_path, damage, message, torchscript):
    artifact.save(tmp_path, model.build("resnet18", 3), _meta())
    damage(tmp_path)
    with pytest.raises(ArtifactError, match=message) as err:
        artifact.load(tmp_path, torchscript=torchscript)
    assert "\n" not in str(err.value)


def test_serving_path_never_imports_torchvision(tmp_path):
    """The CPU serving image has no torchvision: loading an artifact with model.ts and predicting
    through the handler must not import it (checked in a fresh interpreter, where it is installed)."""
    import subprocess
    import sys

    artifact.save(tmp_path, model.build("resnet18", 3), _meta())
    script = f"""
import io, sys
import byoc.container, byoc.serve.server, byoc.serve.front, byoc.serve.mms, byoc.serve.handler as h
from PIL import Image
handler = h.ImageClassifierHandler()
handler.load({str(tmp_path)!r}, h.pick_device())
png = io.BytesIO()
Image.new("RGB", (50, 40)).save(png, format="PNG")
print(handler.predict(png.getvalue(), {{"content-type": "image/png"}}))
print(sorted(m for m in sys.modules if m.split(".")[0] == "torchvision"))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout


ONNX_ENTRY = {"file": "model.onnx", "opset": 17, "input": "input", "output": "logits", "softmax_diff": 1e-6}
INT8_ENTRY = {"file": "model.int8.onnx", "runtime": "onnxruntime", "format": "QDQ", "top1_int8": 0.9}


def test_the_onnx_copies_entries_survive_a_rewrite_of_model_json(tmp_path):
    artifact.save(tmp_path, model.build("resnet18", 3), _meta())
    doc = json.loads((tmp_path / "model.json").read_text())
    (tmp_path / "model.json").write_text(json.dumps({**doc, "onnx": ONNX_ENTRY, "int8": INT8_ENTRY}))
    meta = artifact.read_meta(tmp_path)
    assert (meta.onnx, meta.int8) == (ONNX_ENTRY, INT8_ENTRY)
    meta.metrics = {"test_acc": 0.5}
    artifact.save(tmp_path, model.build("resnet18", 3), meta)
    again = json.loads((tmp_path / "model.json").read_text())
    assert (again["onnx"], again["int8"], again["metrics"]) == (ONNX_ENTRY, INT8_ENTRY, {"test_acc": 0.5})
    assert (_meta().onnx, _meta().int8) == (None, None)  # an artifact without copies says so


@pytest.mark.parametrize("key", ["onnx", "int8"])
@pytest.mark.parametrize("entry", [{"file": "../model.onnx"}, {"file": ""}, {"opset": 17}, "model.onnx", {"file": 3}])
def test_an_onnx_copy_outside_the_model_directory_is_refused(tmp_path, key, entry):
    artifact.save(tmp_path, model.build("resnet18", 3), _meta())
    doc = json.loads((tmp_path / "model.json").read_text())
    (tmp_path / "model.json").write_text(json.dumps({**doc, key: entry}))
    with pytest.raises(ArtifactError, match=rf"model.json: {key}.file must be a file name in the model directory"):
        artifact.read_meta(tmp_path)


def test_the_metadata_and_image_opening_import_without_torch():
    """byoc-serve:cpu has no torch: model.json, the image opener and the numpy transform must not need it."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import byoc.core.model_meta, byoc.core.images, byoc.core.eval_numpy, byoc.serve.codec\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch' and sys.modules[m] is not None))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"
