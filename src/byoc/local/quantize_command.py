"""`byoc quantize MODEL --calibration DIR`: the INT8 copy of an existing artifact (a model directory
or a model.tar.gz, repacked with the copy), as a training job makes it (byoc.core.quantize)."""

from __future__ import annotations

import argparse
import tarfile
import tempfile
from pathlib import Path

from byoc.core.errors import ArtifactError


def register(sub) -> None:
    p = sub.add_parser(
        "quantize", help="add an INT8 copy (model.int8.onnx) to a model, calibrated and checked on labelled images"
    )
    p.add_argument("model", type=Path, help="model directory (model.json, model.pt, ...) or its model.tar.gz")
    p.add_argument(
        "--calibration",
        type=Path,
        required=True,
        metavar="DIR",
        help="class folders of labelled images (e.g. dogImages/valid), or a dataset root: its valid/ or test/",
    )
    p.add_argument(
        "--max-drop",
        type=float,
        default=1.0,
        metavar="POINTS",
        help="largest top-1 loss against fp32 for which the copy is kept (default 1.0)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # torch and ONNX Runtime only now: building the parser must stay cheap (byoc.cli).
    from byoc.core import quantize

    if args.model.is_file():
        return _run_on_tarball(args)
    entry = quantize.quantize(args.model, args.calibration, max_drop=args.max_drop)
    return _report(args.model, args.model, entry)


def _report(name: Path, model_dir: Path, entry: dict | None) -> int:
    """The result's one line; a refused copy has had its line logged (both top-1 and the bound): exit 1."""
    from byoc.core import quantize

    if entry is None:
        return 1
    print(f"{name}: {quantize.summary(model_dir, entry)}")
    return 0


def _run_on_tarball(args: argparse.Namespace) -> int:
    """Unpack, quantize, repack in place (atomically) whatever the verdict: model.onnx is new either way."""
    from byoc.core import quantize
    from byoc.local.model_store import InvalidModelData, unpack

    with tempfile.TemporaryDirectory(prefix="byoc-quantize-") as tmp:
        model_dir = Path(tmp)
        try:
            unpack(args.model, model_dir)
        except InvalidModelData as exc:
            raise ArtifactError(f"{args.model} is not a model.tar.gz: {exc}") from exc
        entry = quantize.quantize(model_dir, args.calibration, max_drop=args.max_drop)
        _repack(model_dir, args.model)
        code = _report(args.model, model_dir, entry)
    return code


def _repack(model_dir: Path, tarball: Path) -> None:
    """`model_dir`'s files at the top of a gzip tarball, as SageMaker packs /opt/ml/model."""
    from byoc.core.files import atomic_write

    def write(fh) -> None:
        # Level 1: float weights hardly compress, and level 9 spends ~10 s on a ResNet's 200 MB.
        with tarfile.open(fileobj=fh, mode="w:gz", compresslevel=1) as tar:
            for path in sorted(model_dir.iterdir()):
                tar.add(path, arcname=path.name)

    atomic_write(tarball, write)
