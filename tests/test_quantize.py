"""byoc.core.quantize, `byoc quantize` and the training hook: a resnet18 trained in-process on the demo
digits (32 px) gets its INT8 copy at the end of training, checked by ONNX Runtime against fp32; a bad
calibration is refused; the CLI does the same for a directory and a model.tar.gz."""

from __future__ import annotations

import json
import logging
import shutil
import signal
import tarfile
from types import SimpleNamespace

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from byoc.cli import main
from byoc.core import artifact, onnx_export, quantize
from byoc.core.errors import ArtifactError, ConfigError, DataError
from byoc.core.eval_numpy import eval_transform_numpy
from byoc.training import train
from byoc.training.contract import Job, TrainConfig
from tests.helpers import models

KEEP = {"train": 60, "valid": 27, "test": 10}  # images per class: 89% top-1 after 4 epochs, ~30 s
# Four epochs at 32 px: 89% top-1, ~30 s. A point of top-1 is 3 of its 269 validation images,
# so the bound is two points here (and the hyperparameter is seen to reach quantize).
QUICK = dict(models.QUICK, image_size=32, epochs=4, log_every=50, export_int8=True, int8_max_drop=2.0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A training run on the digits (export-int8 on by default): its job and its log."""
    from byoc.local.demo_data import write_demo_dataset

    root = tmp_path_factory.mktemp("digits")
    write_demo_dataset(root, size=32)
    for split, keep in KEEP.items():
        for cls in (root / split).iterdir():
            for extra in sorted(cls.iterdir())[keep:]:
                extra.unlink()
    job = Job.one_host(tmp_path_factory.mktemp("opt_ml"), {"training": root}, num_cpus=2)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger, level, sigterm = (
        logging.getLogger("byoc"),
        logging.getLogger("byoc").level,
        signal.getsignal(signal.SIGTERM),
    )
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        train.run(job, TrainConfig(**QUICK))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        signal.signal(signal.SIGTERM, sigterm)  # the run installed its checkpointing handler
    return SimpleNamespace(job=job, data=root, log=[r.getMessage() for r in records])


@pytest.fixture
def fresh(trained, tmp_path):
    """A copy of the trained artifact with neither ONNX copy (as an artifact of an older byoc)."""
    model_dir = tmp_path / "model"
    shutil.copytree(trained.job.model_dir, model_dir)
    for key in (quantize.META_KEY, onnx_export.META_KEY):
        onnx_export.record(model_dir, key, None)
    for name in (quantize.INT8_FILE, onnx_export.ONNX_FILE):
        (model_dir / name).unlink(missing_ok=True)
    return model_dir


def entry_of(model_dir):
    return json.loads((model_dir / artifact.META_FILE).read_text()).get(quantize.META_KEY)


def test_training_writes_the_int8_copy_and_records_it(trained):
    model_dir = trained.job.model_dir
    entry = entry_of(model_dir)
    valid = sum(1 for _ in (trained.data / "valid").rglob("*.png"))
    assert (model_dir / "model.int8.onnx").is_file() and (model_dir / "model.onnx").is_file()
    assert {k: entry[k] for k in ("file", "runtime", "format", "per_channel", "calibration", "max_drop")} == {
        "file": "model.int8.onnx",
        "runtime": "onnxruntime",
        "format": "QDQ",
        "per_channel": True,
        "calibration": "MinMax",
        "max_drop": 2.0,
    }
    assert entry["calibration_images"] == entry["eval_images"] == valid  # fewer than the bounds of 300 and 1000
    assert 80 <= entry["top1_fp32"] <= 100 and entry["top1_fp32"] - entry["top1_int8"] <= 2.0
    assert entry["checked_with"] == {"onnxruntime": ort.__version__}
    assert 90 <= entry["agreement"] <= 100 and 0 < entry["max_score_diff"] < 1
    assert entry["fp32_layers"] in ([], [quantize.FIRST_CONV])
    # the INT8 copy is about a quarter of the fp32 one, and the artifact still loads as before
    assert (model_dir / "model.int8.onnx").stat().st_size < 0.3 * (model_dir / "model.onnx").stat().st_size
    assert artifact.read_meta(model_dir).torchscript == "model.ts"
    [line] = [m for m in trained.log if m.startswith("int8: ")]
    assert "model.int8.onnx" in line and f"{entry['top1_int8']:.2f}%" in line and "MB" in line


def test_int8_answers_as_fp32_on_held_out_images(trained):
    model_dir = trained.job.model_dir
    meta = artifact.read_meta(model_dir)
    images = quantize.labelled_images(trained.data / "test", meta.labels)
    fp32, int8 = (ort.InferenceSession(str(model_dir / n)) for n in ("model.onnx", "model.int8.onnx"))
    same = total = 0
    for x, _ in quantize.eval_batches(images, eval_transform_numpy(meta.preprocessing)):
        a, b = fp32.run(None, {"input": x})[0], int8.run(None, {"input": x})[0]
        same += int((a.argmax(1) == b.argmax(1)).sum())
        total += len(x)
    assert total == len(images) == 100 and same >= 0.95 * total


def test_quantize_exports_model_onnx_first_and_reads_a_dataset_root(fresh, trained):
    entry = quantize.quantize(
        fresh, trained.data, calibration_images=40, eval_images=50, max_drop=5.0
    )  # a point is half an image here
    assert onnx_export.recorded(fresh) is not None and (fresh / "model.onnx").is_file()
    assert entry == entry_of(fresh) and (fresh / "model.int8.onnx").is_file()
    assert entry["calibration_images"] == 40 and entry["eval_images"] == 50
    assert quantize.split_folder(trained.data) == trained.data / "valid"
    assert quantize.split_folder(trained.data / "test") == trained.data / "test"


def test_a_bad_calibration_is_refused_and_leaves_no_copy(fresh, trained, monkeypatch, caplog):
    """Calibrated on black images with every layer in INT8, the input's range misses every real digit:
    top-1 falls far, on the retry with the first convolution in fp32 too (the patch ignores it)."""
    shutil.copy(trained.job.model_dir / "model.int8.onnx", fresh)  # a stale copy and its entry
    onnx_export.record(fresh, quantize.META_KEY, entry_of(trained.job.model_dir))
    black = fresh.parent / "black.png"
    Image.new("RGB", (32, 32)).save(black)
    real = quantize.quantized_copy
    monkeypatch.setattr(
        quantize,
        "quantized_copy",
        lambda fp32, images, *rest, **kw: real(fp32, [quantize.Labelled(black, 0)] * 8, *rest),
    )
    with caplog.at_level(logging.WARNING, logger="byoc.core.quantize"):
        assert quantize.quantize(fresh, trained.data / "valid") is None
    assert not (fresh / "model.int8.onnx").exists() and entry_of(fresh) is None
    assert (fresh / "model.onnx").is_file()  # the fp32 copy stays
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith("no INT8 copy: its top-1 ") and "under fp32's" in line and "bound of 1" in line


def test_class_folders_must_be_the_models_labels(fresh, trained, tmp_path):
    folder = tmp_path / "valid"
    shutil.copytree(trained.data / "valid", folder)
    shutil.copytree(folder / "01.zero", folder / "11.unicorn")
    with pytest.raises(DataError, match=r"11\.unicorn are not among the model's 10 labels"):
        quantize.quantize(fresh, folder)
    empty = tmp_path / "empty"
    (empty / "01.zero").mkdir(parents=True)
    with pytest.raises(DataError, match="holds no images in class folders"):
        quantize.quantize(fresh, empty)
    with pytest.raises(DataError, match="does not exist"):
        quantize.quantize(fresh, tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="not one of"):
        quantize.quantize(fresh, folder, method="Distribution")
    assert not (fresh / "model.int8.onnx").exists()


def test_spread_takes_every_class(trained):
    images = quantize.labelled_images(trained.data / "valid", artifact.read_meta(trained.job.model_dir).labels)
    assert {i.target for i in quantize.spread(images, 20)} == set(range(10))
    assert quantize.spread(images, 10_000) == images


def test_cli_on_a_directory_and_a_tarball(fresh, trained, tmp_path, capsys):
    # QUICK's bound: this small model's drop is a few of 269 images (a point is 2.7)
    assert main(["quantize", str(fresh), "--calibration", str(trained.data / "valid"), "--max-drop", "2"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"{fresh}: model.int8.onnx (") and "\n" not in out
    tarball = tmp_path / "model.tar.gz"
    with tarfile.open(tarball, "w:gz", compresslevel=1) as tar:
        for name in ("model.pt", "model.ts", "model.json"):  # as SageMaker packs /opt/ml/model
            tar.add(fresh / name, arcname=name)
    assert main(["quantize", str(tarball), "--calibration", str(trained.data), "--max-drop", "2.5"]) == 0
    assert capsys.readouterr().out.startswith(f"{tarball}: model.int8.onnx (")
    with tarfile.open(tarball) as tar:
        names = set(tar.getnames())
        doc = json.load(tar.extractfile("model.json"))  # type: ignore[arg-type]
    assert names == {"model.pt", "model.ts", "model.json", "model.onnx", "model.int8.onnx"}
    assert doc["int8"]["max_drop"] == 2.5 and doc["onnx"]["file"] == "model.onnx"


def test_cli_errors_are_one_line(fresh, tmp_path, capsys):
    assert main(["quantize", str(fresh), "--calibration", str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: calibration folder") and "\n" not in err
    (tmp_path / "broken.tar.gz").write_bytes(b"not a tarball")
    assert main(["quantize", str(tmp_path / "broken.tar.gz"), "--calibration", str(tmp_path)]) == 1
    assert capsys.readouterr().err.startswith("error: ")


# --------------------------------------------------------------------------- the training hook
def hook_of(model_dir, data, export_int8=True):
    """What write_cpu_copies reads of a run: the job's model dir and channels, and the setting."""
    job = SimpleNamespace(model_dir=model_dir, channels={"training": data})
    return SimpleNamespace(job=job, cfg=TrainConfig(export_int8=export_int8))


def test_export_int8_false_still_writes_model_onnx(fresh, trained):
    train.write_cpu_copies(hook_of(fresh, trained.data, export_int8=False))
    assert (fresh / "model.onnx").is_file() and onnx_export.recorded(fresh) is not None
    assert not (fresh / "model.int8.onnx").exists() and entry_of(fresh) is None


def test_a_failing_export_or_quantization_does_not_fail_the_job(fresh, trained, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise ArtifactError("cannot export ResNet to ONNX: some operator")

    monkeypatch.setattr(onnx_export, "export", broken)
    with caplog.at_level(logging.WARNING, logger="byoc.training"):
        train.write_cpu_copies(hook_of(fresh, trained.data))
    monkeypatch.undo()
    monkeypatch.setattr(quantize, "quantize", lambda *a, **k: np.zeros(2)[5])  # an IndexError, not a ByocError
    with caplog.at_level(logging.WARNING, logger="byoc.training"):
        train.write_cpu_copies(hook_of(fresh, trained.data))
    first, second = (r.getMessage() for r in caplog.records if r.name == "byoc.training")
    assert first.startswith("no ONNX copy of the model") and "some operator" in first
    assert second.startswith("no INT8 copy of the model") and "IndexError" in second
    assert (fresh / "model.onnx").is_file() and not (fresh / "model.int8.onnx").exists()
    artifact.load(fresh)  # the TorchScript artifact is whole


def test_export_int8_is_a_boolean_hyperparameter():
    assert TrainConfig().export_int8 is True
    assert TrainConfig.from_dict({"export-int8": "false"}).export_int8 is False
    assert TrainConfig().to_dict()["export-int8"] is True
    with pytest.raises(ConfigError, match="export-int8"):
        TrainConfig.from_dict({"export-int8": "maybe"})


def test_int8_max_drop_is_a_bound_in_points():
    assert TrainConfig().int8_max_drop == 1.0
    assert TrainConfig.from_dict({"int8-max-drop": "0.5"}).int8_max_drop == 0.5
    for bad in ("-1", "101", "lots"):
        with pytest.raises(ConfigError, match="int8-max-drop"):
            TrainConfig.from_dict({"int8-max-drop": bad})


def test_the_first_convolution_can_stay_in_fp32(fresh, trained):
    import onnx

    onnx_export.export(fresh)
    meta = artifact.read_meta(fresh)
    images = quantize.labelled_images(trained.data / "valid", meta.labels)[:16]
    weights_from = {}
    for keep in (False, True):
        data = quantize.quantized_copy(
            fresh / "model.onnx", images, eval_transform_numpy(meta.preprocessing), "MinMax", keep_first_conv=keep
        )
        graph = onnx.load_from_string(data).graph
        producers = {out: node.op_type for node in graph.node for out in node.output}
        first = next(n for n in graph.node if n.op_type == "Conv")
        weights_from[keep] = producers.get(first.input[1], "initializer")
    assert weights_from == {False: "DequantizeLinear", True: "initializer"}


def test_the_quantizers_notes_stay_out_of_the_jobs_log(fresh, trained, caplog):
    """ONNX Runtime's quantizer logs a line per bias it copies through the root logger (about fifty
    for a ResNet-50): they go to byoc's debug log, and its warnings stay."""
    where = "/x/onnxruntime/quantization/qdq_quantizer.py"
    note = logging.LogRecord("root", logging.INFO, where, 1, "copied", None, None)
    warning = logging.LogRecord("root", logging.WARNING, where, 1, "kept", None, None)
    with caplog.at_level(logging.INFO):
        with quantize._quantizer_quiet():
            logging.getLogger().handle(note)
            logging.getLogger().handle(warning)
        quantize.quantize(fresh, trained.data, calibration_images=20, eval_images=20, max_drop=100)
    from_ort = [r.getMessage() for r in caplog.records if "onnxruntime" in r.pathname]
    assert from_ort == ["kept"]


def test_a_retry_compares_both_copies_with_one_fp32_pass(fresh, trained, monkeypatch):
    """Under the agreement bound the first-convolution copy is tried too; fp32's scores are computed
    once for both comparisons, and the copy that agrees more is kept."""
    monkeypatch.setattr(quantize, "RETRY_BELOW_AGREEMENT", 101.0)  # always retry
    passes, compared = [], []
    fp32_scores, compare = quantize.fp32_scores, quantize.compare
    monkeypatch.setattr(quantize, "fp32_scores", lambda *a: passes.append(a) or fp32_scores(*a))
    monkeypatch.setattr(quantize, "compare", lambda *a: compared.append(compare(*a)) or compared[-1])
    entry = quantize.quantize(fresh, trained.data, calibration_images=20, eval_images=40, max_drop=100)
    assert len(passes) == 1 and len(compared) == 2
    kept = compared[1] if compared[1].agreement > compared[0].agreement else compared[0]
    assert entry["agreement"] == round(kept.agreement, 2) and entry["eval_images"] == 40
    assert entry["fp32_layers"] == ([quantize.FIRST_CONV] if kept is compared[1] else [])
