"""The runtimes a worker serves an artifact with (byoc.serve.runtimes): which one is chosen and the
file it loads (byoc.serve.choice), the ONNX
Runtime copy against TorchScript, the refusals, and the handler serving an ONNX artifact in a fresh
interpreter where torch cannot be imported (as in byoc-serve:cpu)."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from byoc.core import onnx_export
from byoc.core.errors import ArtifactError, ConfigError
from byoc.core.model_meta import META_FILE, ModelMeta
from byoc.serve import choice, runtimes
from byoc.serve.choice import Kind
from byoc.serve.config import Precision, ServeConfig

LABELS = [f"c{i}" for i in range(10)]
ONNX = {"file": "model.onnx", "input": "input", "output": "logits"}
INT8 = {"file": "model.int8.onnx", "runtime": "onnxruntime", "format": "QDQ"}


def _meta(onnx=None, int8=None) -> ModelMeta:
    return ModelMeta(arch="resnet18", labels=LABELS, onnx=onnx, int8=int8)


# -- the choice --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "onnx, int8, precision, kind",
    [
        (ONNX, INT8, None, Kind.ONNX_INT8),
        (ONNX, None, None, Kind.ONNX_FP32),
        (ONNX, INT8, Precision.FP32, Kind.ONNX_FP32),
        (ONNX, INT8, Precision.INT8, Kind.ONNX_INT8),
        (None, INT8, None, Kind.ONNX_INT8),
    ],
)
def test_without_torch_the_onnx_copy_is_served(onnx, int8, precision, kind):
    assert choice.choose(_meta(onnx, int8), precision, has_torch=False) is kind


@pytest.mark.parametrize("precision", [None, Precision.FP32])
def test_with_torch_torchscript_is_served_whatever_copies_there_are(precision):
    assert choice.choose(_meta(ONNX, INT8), precision, has_torch=True) is Kind.TORCHSCRIPT
    assert choice.choose(_meta(), precision, has_torch=True) is Kind.TORCHSCRIPT


@pytest.mark.parametrize(
    "meta, precision, has_torch, error, match",
    [
        (_meta(ONNX, INT8), Precision.INT8, True, ConfigError, r"BYOC_PRECISION=int8: .* served by byoc-serve:cpu"),
        (_meta(), None, False, ArtifactError, r"no ONNX copy .* byoc-serve:latest, .*`byoc quantize MODEL_DIR"),
        (_meta(), Precision.FP32, False, ArtifactError, r"no ONNX copy .* byoc-serve:latest"),
        (_meta(ONNX), Precision.INT8, False, ArtifactError, r"BYOC_PRECISION=int8 but model.json has no INT8 copy"),
        (_meta(None, INT8), Precision.FP32, False, ArtifactError, r"BYOC_PRECISION=fp32 but .* no fp32 ONNX copy"),
    ],
)
def test_what_cannot_be_served_here_is_a_one_line_refusal(meta, precision, has_torch, error, match):
    with pytest.raises(error, match=match) as err:
        choice.choose(meta, precision, has_torch)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "doc, precision, has_torch, served",
    [
        ({"onnx": ONNX, "int8": INT8}, None, False, "model.int8.onnx"),
        ({"onnx": ONNX, "int8": INT8}, Precision.FP32, False, "model.onnx"),
        ({"onnx": ONNX, "int8": INT8, "torchscript": "model.ts"}, None, True, "model.ts"),
        ({}, None, True, "model.pt"),  # no TorchScript copy: the worker rebuilds it from the weights
        ({}, None, False, None),  # refused: the worker's load says why
    ],
)
def test_the_served_file_is_the_one_the_choice_loads(tmp_path, doc, precision, has_torch, served):
    (tmp_path / META_FILE).write_text(json.dumps({**_meta().to_json(), **doc}))
    want = tmp_path / served if served else None
    assert choice.served_file(tmp_path, precision, has_torch) == want
    assert choice.served_file(tmp_path / "missing", precision, has_torch) is None


# -- an artifact with its ONNX copies ------------------------------------------------------------
def _png(color=(10, 200, 30), size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def _record(model_dir: Path, key: str, entry: dict) -> None:
    path = model_dir / META_FILE
    doc = json.loads(path.read_text())
    path.write_text(json.dumps({**doc, key: entry}))


def _quantize(model_dir: Path) -> None:
    """An INT8 QDQ copy of model.onnx, calibrated on a few random batches (the quantizer's own API:
    byoc.core.quantize is tested in tests/test_quantize.py)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.batches = iter([{"input": rng.standard_normal((2, 3, 32, 32), dtype=np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(
        str(model_dir / "model.onnx"),
        str(model_dir / INT8["file"]),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    _record(model_dir, "int8", INT8)


@pytest.fixture(scope="module")
def model_dir(model_dir: Path) -> Path:
    """The module's untrained artifact (the shared `model_dir` fixture) with its fp32 ONNX copy and an INT8 copy."""
    onnx_export.export(model_dir)
    _quantize(model_dir)
    return model_dir


def _copy(model_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(model_dir, tmp_path / "model"))


def test_the_onnx_runtime_gives_torchscripts_inputs_and_answers(model_dir):
    config = ServeConfig(model_dir=model_dir, torch_threads=2, precision=Precision.FP32)
    onnx = runtimes.load(model_dir, "cpu", config, has_torch=False)
    ts = runtimes.load(model_dir, "cpu", ServeConfig(model_dir=model_dir), has_torch=True)
    assert (onnx.name, onnx.threads, onnx.device) == ("onnxruntime-fp32", 2, "cpu")
    assert ts.name == "torchscript"
    rng = np.random.default_rng(2)
    images = [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in ((40, 30), (90, 120))]
    x = np.stack([onnx.transform(img) for img in images])
    assert x.dtype == np.float32 and x.shape == (2, 3, 32, 32)
    assert np.array_equal(x, np.stack([ts.transform(img) for img in images]))
    probs = onnx.infer(x)
    assert probs.dtype == np.float32 and probs.shape == (2, len(LABELS))
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert np.abs(probs - ts.infer(x)).max() < 1e-5


def test_the_int8_copy_is_served_by_default_and_stays_close(model_dir):
    int8 = runtimes.load(model_dir, "cpu", ServeConfig(model_dir=model_dir), has_torch=False)
    fp32 = runtimes.load(model_dir, "cpu", ServeConfig(model_dir=model_dir, precision=Precision.FP32), has_torch=False)
    assert int8.name == "onnxruntime-int8" and int8.threads >= 1
    x = np.random.default_rng(3).standard_normal((3, 3, 32, 32), dtype=np.float32)
    assert np.abs(int8.infer(x) - fp32.infer(x)).max() < 0.2  # random weights: a loose bound, not accuracy


def test_a_missing_onnx_file_is_a_one_line_artifact_error(model_dir, tmp_path):
    path = _copy(model_dir, tmp_path)
    (path / INT8["file"]).unlink()
    with pytest.raises(ArtifactError, match=r"model.json names model.int8.onnx, which is missing") as err:
        runtimes.load(path, "cpu", ServeConfig(model_dir=path), has_torch=False)
    assert "\n" not in str(err.value)


def test_a_corrupt_onnx_file_is_a_one_line_artifact_error(model_dir, tmp_path):
    path = _copy(model_dir, tmp_path)
    (path / "model.onnx").write_bytes(b"not a model")
    with pytest.raises(ArtifactError, match=r"is corrupt or not an ONNX model") as err:
        runtimes.load(path, "cpu", ServeConfig(model_dir=path, precision=Precision.FP32), has_torch=False)
    assert "\n" not in str(err.value)


def test_an_onnx_copy_of_another_model_is_refused(model_dir, tmp_path):
    path = _copy(model_dir, tmp_path)
    doc = json.loads((path / META_FILE).read_text())
    (path / META_FILE).write_text(json.dumps({**doc, "labels": LABELS[:3]}))
    with pytest.raises(ArtifactError, match=r"outputs \[1, 10\] for one image, model.json lists 3 labels"):
        runtimes.load(path, "cpu", ServeConfig(model_dir=path, precision=Precision.FP32), has_torch=False)
    doc["preprocessing"] = {**doc["preprocessing"], "image_size": 48}
    (path / META_FILE).write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match=r"model.onnx takes .*, model.json says N x \[3, 48, 48\]"):
        runtimes.load(path, "cpu", ServeConfig(model_dir=path, precision=Precision.FP32), has_torch=False)


def test_the_handler_serves_the_onnx_copy_when_told_there_is_no_torch(model_dir):
    from byoc.serve.handler import ImageClassifierHandler

    onnx = ImageClassifierHandler(ServeConfig(model_dir=model_dir, precision=Precision.FP32))
    onnx.load(model_dir, "cpu", has_torch=False)
    ts = ImageClassifierHandler(ServeConfig(model_dir=model_dir))
    ts.load(model_dir, "cpu")
    assert (onnx.runtime.name, ts.runtime.name) == ("onnxruntime-fp32", "torchscript")
    headers = {"content-type": "image/png", "x-amzn-sagemaker-custom-attributes": "top_k=10"}
    got, want = (json.loads(h.predict(_png(), headers))["predictions"] for h in (onnx, ts))
    assert [p["index"] for p in got] == [p["index"] for p in want]
    assert [p["score"] for p in got] == pytest.approx([p["score"] for p in want], abs=1e-5)


# -- without torch at all, in a fresh interpreter -------------------------------------------------
NO_TORCH = "import sys; sys.modules['torch'] = None  # as in byoc-serve:cpu: `import torch` raises ImportError\n"


def _without_torch(script: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NO_TORCH + script], capture_output=True, text=True, timeout=300)


def test_without_torch_the_handler_serves_the_int8_copy_end_to_end(model_dir):
    script = f"""
import io, json
import byoc.serve.front, byoc.serve.handler as h
from PIL import Image
handler = h.ImageClassifierHandler()
handler.load({str(model_dir)!r}, h.pick_device())
png = io.BytesIO()
Image.new("RGB", (40, 30), (10, 200, 30)).save(png, format="PNG")
answer = handler.predict(png.getvalue(), {{"content-type": "image/png"}})
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision") and sys.modules[m] is not None)
print(json.dumps({{"runtime": handler.runtime.name, "device": handler.device, "answer": json.loads(answer),
                  "torch_modules": loaded}}))
"""
    proc = _without_torch(script)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (doc["runtime"], doc["device"], doc["torch_modules"]) == ("onnxruntime-int8", "cpu", [])
    preds = doc["answer"]["predictions"]
    assert len(preds) == 5 and all(LABELS[p["index"]] == p["label"] for p in preds)


def test_without_torch_an_artifact_without_onnx_copy_is_refused_in_one_line(model_dir, tmp_path):
    path = _copy(model_dir, tmp_path)
    doc = json.loads((path / META_FILE).read_text())
    (path / META_FILE).write_text(json.dumps({k: v for k, v in doc.items() if k not in ("onnx", "int8")}))
    script = f"""
import byoc.serve.handler as h
from byoc.core.errors import ArtifactError
try:
    h.ImageClassifierHandler().load({str(path)!r}, h.pick_device())
except ArtifactError as exc:
    print("refused:", exc)
"""
    proc = _without_torch(script)
    assert proc.returncode == 0, proc.stderr[-2000:]
    [line] = proc.stdout.strip().splitlines()
    assert line.startswith("refused: this image has no torch and the artifact has no ONNX copy")
    assert "byoc-serve:latest" in line and "byoc quantize MODEL_DIR --calibration DIR" in line
