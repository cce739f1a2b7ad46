"""An artifact's INT8 copy (`model.int8.onnx`): post-training static quantization of model.onnx with
ONNX Runtime's quantizer, calibrated on labelled images, kept only when its top-1 stays within
`max_drop` points of the fp32 model's.

The format is QDQ (QuantizeLinear/DequantizeLinear pairs around float operators, which ONNX
Runtime's CPU provider fuses into int8 kernels and OpenVINO reads too), with int8 weights per output
channel and uint8 activations per tensor (the fast pair on x86: see ACTIVATIONS). Images are opened
as training opens its evaluation splits (`open_image`, JPEG draft decoding at the resize size) and
transformed by the torch-free twin of the evaluation transform (`eval_numpy`), in batches of
`BATCH`, so memory stays bounded whatever the number of images. Calibration and evaluation both take
images spread evenly over the sorted class folders; they may overlap, which flatters the INT8 copy
little: calibration sees only the ranges of the activations, never a label. Both models are scored
through ONNX Runtime on the same arrays.

The result goes into model.json under "int8" (`onnx_export.record`); a refused copy leaves neither
the file nor the entry behind.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort  # type: ignore[import-untyped]
from onnxruntime.quantization import (  # type: ignore[import-untyped]
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quant_pre_process,
    quantize_static,
)
from PIL import Image

from byoc.core import onnx_export
from byoc.core.errors import ArtifactError, ByocError, ConfigError, DataError, ImageError, first_line
from byoc.core.eval_numpy import EvalTransformNumpy, eval_transform_numpy, softmax
from byoc.core.files import atomic_write
from byoc.core.images import open_image
from byoc.core.model_meta import read_meta

log = logging.getLogger(__name__)

INT8_FILE = "model.int8.onnx"
META_KEY = "int8"
MAX_DROP = 1.0  # top-1 points the INT8 copy may lose against fp32
CALIBRATION_IMAGES = 300
EVAL_IMAGES = 1000
BATCH = 8  # images per calibration or evaluation run: one batch of ResNet-50's activations is ~0.4 GB
# Measured on this box (2 cores with AVX-512 VNNI, ONNX Runtime 1.32). Calibration: resnet18 trained
# on the demo digits at 64 px, calibrated and scored on valid/ (270 images), top-1 fp32 95.91 -> int8
# MinMax 96.28, Percentile 95.91, Entropy 95.91; on the held-out test/ all three 92.94 -> 92.57 (99.6%
# of top-1 answers unchanged), with int8 or uint8 activations alike. They tie, so MinMax: the quickest
# and the simplest. Activations: uint8 (U8S8), which ONNX Runtime's x86 kernels run as int8
# convolutions; ResNet-50 (133 classes) at 2 threads 16.8 ms per image at batch 1 and 15.4 at batch 4,
# against 51.5 and 51.5 in fp32, while int8 activations (S8S8) ran 56.1 and 52.2, no faster than fp32.
# Quantizing that ResNet-50 (270 calibration images, both models scored on them) took 50 s.
# Not reduce_range: without VNNI (the first ml.m5/c5 generation) U8S8 can saturate; the check below
# runs where it is quantized, so an artifact for such hosts is best quantized on one of them.
CALIBRATION = "MinMax"
# The first convolution (the one that reads the normalised image) is the layer INT8 hurts most: the
# demo digits at 32 px (resnet18, 3 epochs), held-out top-1 fp32 85.50, all-INT8 82.53, the first
# convolution kept in fp32 85.50 (the last layer kept too: 85.13; Percentile: 82.16), while on the
# validation split both scored as fp32. Top-1 on a few hundred images is too coarse to tell them
# apart; how often the top label is fp32's is not. The fp32 first convolution costs ResNet-50 about
# 4 ms of 31 at 2 threads, so it is tried only when under RETRY_BELOW_AGREEMENT percent of the
# all-INT8 copy's top labels are fp32's, and kept when more of its own are; model.json's
# "fp32_layers" names what stayed in fp32.
FIRST_CONV = "first convolution"
RETRY_BELOW_AGREEMENT = 99.5
METHODS = ("MinMax", "Percentile", "Entropy")
ACTIVATIONS = QuantType.QUInt8
# Training's own bound for its images (byoc.training.data.MAX_TRAIN_PIXELS: Pillow's bomb limit x 2).
MAX_PIXELS = 2 * 89_478_485
# A split inside a dataset root, in the order looked for (the dogImages layout: train/ valid/ test/).
SPLITS = ("valid", "validation", "val", "test")
# training.data.clean_class_name's rule (`001.Affenpinscher` -> `Affenpinscher`), which made the labels.
_NUMBER_PREFIX = re.compile(r"^\d+[._\-\s]+")


@dataclass(frozen=True)
class Labelled:
    """An image file and the index of its label in the artifact."""

    path: Path
    target: int


def quantize(
    model_dir: Path,
    calibration_dir: Path,
    *,
    max_drop: float = MAX_DROP,
    calibration_images: int = CALIBRATION_IMAGES,
    eval_images: int = EVAL_IMAGES,
    method: str = CALIBRATION,
) -> dict[str, Any] | None:
    """Write `model_dir`/model.int8.onnx calibrated on `calibration_dir` (class folders, or a dataset
    root: its valid/ or else test/ split) and record it in model.json; model.onnx is exported first
    when there is none. Returns the recorded entry, or None (and no INT8 file) when its top-1 is more
    than `max_drop` points under fp32's. Raises ArtifactError, DataError or ConfigError."""
    model_dir = Path(model_dir)
    _check_settings(calibration_images, eval_images, method)
    meta = read_meta(model_dir)
    images = labelled_images(split_folder(Path(calibration_dir)), meta.labels)
    fp32 = fp32_copy(model_dir)
    transform = eval_transform_numpy(meta.preprocessing)
    started = time.monotonic()
    calibration, evaluation = spread(images, calibration_images), spread(images, eval_images)
    reference = fp32_scores(fp32, evaluation, transform)  # once, for every INT8 candidate
    data = quantized_copy(fp32, calibration, transform, method)
    c, fp32_layers = compare(reference, data, evaluation, transform), []
    if c.agreement < RETRY_BELOW_AGREEMENT:
        kept = quantized_copy(fp32, calibration, transform, method, keep_first_conv=True)
        k = compare(reference, kept, evaluation, transform)
        log.info(
            "quantized: %.2f%% of top labels as fp32's all in INT8, %.2f%% with the first convolution in fp32",
            c.agreement,
            k.agreement,
        )
        if k.agreement > c.agreement:
            data, c, fp32_layers = kept, k, [FIRST_CONV]
    if c.top1_fp32 - c.top1_int8 > max_drop:
        refuse(model_dir, c.top1_fp32, c.top1_int8, max_drop)
        return None
    atomic_write(model_dir / INT8_FILE, lambda fh: fh.write(data))
    entry = {
        "file": INT8_FILE,
        "runtime": "onnxruntime",
        "format": "QDQ",
        "per_channel": True,
        "fp32_layers": fp32_layers,
        "calibration": method,
        "calibration_images": len(calibration),
        "eval_images": c.images,
        "top1_fp32": round(c.top1_fp32, 2),
        "top1_int8": round(c.top1_int8, 2),
        "agreement": round(c.agreement, 2),
        "max_score_diff": math.ceil(c.max_score_diff * 1e4) / 1e4,  # rounded up: a bound
        "max_drop": max_drop,
        "checked_with": {"onnxruntime": ort.__version__},
    }
    onnx_export.record(model_dir, META_KEY, entry)
    log.debug("quantized in %.1f s", time.monotonic() - started)
    return entry


def _check_settings(calibration_images: int, eval_images: int, method: str) -> None:
    if calibration_images < 1 or eval_images < 1:
        raise ConfigError(f"calibration and evaluation need at least one image, not {calibration_images}/{eval_images}")
    if method not in METHODS:
        raise ConfigError(f"calibration method {method!r} is not one of {', '.join(METHODS)}")


def summary(model_dir: Path, entry: dict[str, Any]) -> str:
    """One line on a recorded INT8 copy: its file and size, both top-1 and what it was calibrated on."""
    size = (Path(model_dir) / entry["file"]).stat().st_size / 1e6
    return (
        f"{entry['file']} ({size:.1f} MB): top-1 {entry['top1_int8']:.2f}% against fp32 {entry['top1_fp32']:.2f}% "
        f"on {entry['eval_images']} images, calibrated on {entry['calibration_images']} ({entry['calibration']})"
    )


def refuse(model_dir: Path, top1_fp32: float, top1_int8: float, max_drop: float) -> None:
    """Leave no INT8 copy (the entry goes first, so that model.json never names a missing file) and say why."""
    onnx_export.record(model_dir, META_KEY, None)
    (model_dir / INT8_FILE).unlink(missing_ok=True)
    log.warning(
        "no INT8 copy: its top-1 %.2f%% is %.2f points under fp32's %.2f%%, more than the bound of %g",
        top1_int8,
        top1_fp32 - top1_int8,
        top1_fp32,
        max_drop,
    )


# --------------------------------------------------------------------------- images
def split_folder(root: Path) -> Path:
    """`root`'s valid/ (or test/) split when it is a dataset root, else `root` itself."""
    if not root.is_dir():
        raise DataError(f"calibration folder {root} does not exist")
    for name in SPLITS:
        if (root / name).is_dir():
            return root / name
    return root


def label_of(folder: str, index: dict[str, int]) -> int | None:
    """The label index of a class folder: its name, or its name without a number prefix."""
    if folder in index:
        return index[folder]
    return index.get(_NUMBER_PREFIX.sub("", folder).strip() or folder)


def labelled_images(folder: Path, labels: list[str]) -> list[Labelled]:
    """The images in `folder`'s class folders, sorted, each with its label's index in `labels`."""
    index = {label: i for i, label in enumerate(labels)}
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    targets = {c.name: label_of(c.name, index) for c in classes}
    unknown = [name for name, target in targets.items() if target is None]
    if unknown:
        raise DataError(
            f"{folder}: class folder(s) {', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''} are not "
            f"among the model's {len(labels)} labels: calibrate on images of the classes it was trained on"
        )
    Image.init()
    extensions = {ext.lower() for ext in Image.registered_extensions()}
    images = [
        Labelled(path, target)
        for c in classes
        if (target := targets[c.name]) is not None
        for path in sorted(c.rglob("*"))
        if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in extensions
    ]
    if not images:
        raise DataError(f"{folder} holds no images in class folders (the layout of dogImages/valid)")
    return images


def spread(images: list[Labelled], n: int) -> list[Labelled]:
    """`n` of `images` evenly spaced (all of them when there are fewer), so every class has its share."""
    if len(images) <= n:
        return list(images)
    return [images[i * len(images) // n] for i in range(n)]


def _read(image: Labelled, transform: EvalTransformNumpy) -> np.ndarray:
    return transform(open_image(image.path, MAX_PIXELS, transform.pre.draft_size))


class CalibrationBatches(CalibrationDataReader):
    """The calibration images as the quantizer reads them: one batch per `get_next`, within the range
    `set_range` gives (quantize_static collects a range at a time, so that the activations of one
    batch at most are held). An unreadable image is replaced by the next readable one."""

    def __init__(self, images: list[Labelled], transform: EvalTransformNumpy, input_name: str, batch: int = BATCH):
        self.images, self.transform, self.input_name, self.batch = images, transform, input_name, batch
        self.next, self.end = 0, len(self)

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.next, self.end = start_index, min(end_index, len(self))

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.next >= self.end:
            return None
        first = self.next * self.batch
        self.next += 1
        count = min(self.batch, len(self.images) - first)
        return {self.input_name: np.stack([self._readable(first + k) for k in range(count)])}

    def _readable(self, i: int) -> np.ndarray:
        for k in range(len(self.images)):
            try:
                return _read(self.images[(i + k) % len(self.images)], self.transform)
            except ImageError as exc:
                log.debug("calibration: cannot read %s: %s", self.images[(i + k) % len(self.images)].path, exc)
        raise DataError(f"none of the {len(self.images)} calibration images can be read")


def eval_batches(
    images: list[Labelled], transform: EvalTransformNumpy, warn: bool = True
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(images, targets) in batches of up to BATCH; unreadable images are skipped (a warning each with
    `warn`), as training's evaluation does. The same images give the same batches."""
    xs: list[np.ndarray] = []
    ys: list[int] = []
    for i, image in enumerate(images):
        try:
            xs.append(_read(image, transform))
            ys.append(image.target)
        except ImageError as exc:
            if warn:
                log.warning("evaluation: skipped %s: %s", image.path, exc)
        if xs and (len(xs) == BATCH or i == len(images) - 1):
            yield np.stack(xs), np.asarray(ys)
            xs, ys = [], []


# --------------------------------------------------------------------------- models
def fp32_copy(model_dir: Path) -> Path:
    """The artifact's model.onnx, exported first when model.json records none (or its file is gone)."""
    entry = onnx_export.recorded(model_dir)
    if entry is not None and (model_dir / entry["file"]).is_file():
        return model_dir / entry["file"]
    return onnx_export.export(model_dir)


def _session(model: Path | bytes) -> Any:
    return ort.InferenceSession(str(model) if isinstance(model, Path) else model, providers=["CPUExecutionProvider"])


def _input_name(path: Path) -> str:
    return _session(path).get_inputs()[0].name


def quantized_copy(
    fp32: Path, images: list[Labelled], transform: EvalTransformNumpy, method: str, keep_first_conv: bool = False
) -> bytes:
    """The INT8 QDQ model of `fp32`, calibrated on `images` with `method` (the first convolution left
    in fp32 with `keep_first_conv`), serialised."""
    with tempfile.TemporaryDirectory(prefix="byoc-int8-") as tmp:
        prepared, out = Path(tmp) / "prepared.onnx", Path(tmp) / INT8_FILE
        reader = CalibrationBatches(images, transform, _input_name(fp32))
        try:
            with _quantizer_quiet():
                _quantize_static(fp32, prepared, out, reader, method, keep_first_conv)
        except ByocError:
            raise
        except Exception as exc:  # the quantizer raises many types for a graph it cannot handle
            raise ArtifactError(f"cannot quantize {fp32.name}: {first_line(exc)}") from exc
        return out.read_bytes()


def _quantize_static(
    fp32: Path, prepared: Path, out: Path, reader: CalibrationBatches, method: str, keep_first_conv: bool
) -> None:
    # Shape inference and ONNX Runtime's graph optimisations first, as its quantizer asks.
    quant_pre_process(str(fp32), str(prepared))
    exclude = _first_conv(prepared) if keep_first_conv else []
    quantize_static(
        str(prepared),
        str(out),
        reader,
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=ACTIVATIONS,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod[method],
        nodes_to_exclude=exclude,
        # One batch per collection: every method then holds one batch's activations at a time.
        extra_options={"CalibStridedMinMax": 1},
    )


def _first_conv(model: Path) -> list[str]:
    """The name of the first Conv node of `model` (in graph order, which is topological), if any."""
    import onnx

    graph = onnx.load(str(model), load_external_data=False).graph
    return next(([n.name] for n in graph.node if n.op_type == "Conv"), [])


def _quantizer_notes(record: logging.LogRecord) -> bool:
    """An ONNX Runtime quantizer note logged through the root logger goes to the debug log instead."""
    if record.levelno >= logging.WARNING or f"onnxruntime{os.sep}quantization" not in record.pathname:
        return True
    log.debug("onnxruntime: %s", record.getMessage())
    return False


@contextlib.contextmanager
def _quantizer_quiet() -> Iterator[None]:
    """The quantizer's progress notes (a printed line per batch for the histogram methods, INFO lines
    on its own logger and on the root one, such as a line per bias it copies: about fifty for a
    ResNet-50) go to the debug log, not the job's output; its warnings stay."""
    printed = io.StringIO()
    ort_log, root = logging.getLogger("onnxruntime"), logging.getLogger()
    level = ort_log.level
    ort_log.setLevel(logging.WARNING)
    root.addFilter(_quantizer_notes)
    try:
        with contextlib.redirect_stdout(printed):
            yield
    finally:
        root.removeFilter(_quantizer_notes)
        ort_log.setLevel(level)
        for line in printed.getvalue().splitlines():
            log.debug("onnxruntime: %s", line)


@dataclass(frozen=True)
class Comparison:
    """The INT8 copy against fp32 on the same arrays: top-1 (percent) of each, how often their top
    labels agree (percent), and the largest difference of any class's softmax score: the tolerance a
    server of the INT8 copy is held to against an fp32 one (tests/test_serve_cpu_container.py)."""

    top1_fp32: float
    top1_int8: float
    agreement: float
    max_score_diff: float
    images: int


def fp32_scores(fp32: Path, images: list[Labelled], transform: EvalTransformNumpy) -> list[np.ndarray]:
    """fp32's softmax scores of `images`, batch by batch as eval_batches gives them: the reference
    every INT8 candidate is compared with. Raises DataError when no image can be read."""
    session = _session(fp32)
    name = session.get_inputs()[0].name
    scores = [softmax(session.run(None, {name: x})[0]) for x, _ in eval_batches(images, transform)]
    if not scores:
        raise DataError(f"none of the {len(images)} evaluation images can be read")
    return scores


def compare(
    reference: list[np.ndarray], int8: bytes, images: list[Labelled], transform: EvalTransformNumpy
) -> Comparison:
    """The INT8 model `int8` against fp32's `reference` scores (fp32_scores) of the same `images`."""
    session = _session(int8)
    name = session.get_inputs()[0].name
    correct, agree, diff, seen = [0, 0], 0, 0.0, 0
    for a, (x, y) in zip(reference, eval_batches(images, transform, warn=False), strict=True):
        b = softmax(session.run(None, {name: x})[0])
        correct[0] += int((a.argmax(axis=1) == y).sum())
        correct[1] += int((b.argmax(axis=1) == y).sum())
        agree += int((a.argmax(axis=1) == b.argmax(axis=1)).sum())
        diff = max(diff, float(np.abs(a - b).max()))
        seen += len(y)
    return Comparison(100 * correct[0] / seen, 100 * correct[1] / seen, 100 * agree / seen, diff, seen)
