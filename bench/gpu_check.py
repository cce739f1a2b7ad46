"""The GPU check: byoc's own training loop and serving handler on one CUDA device, in minutes.

Runs from the source tree on a machine with torch and torchvision and no Docker
(`PYTHONPATH=src:. python3 -m bench.gpu_check`, or `bench/gpu_check.sh`):

  (a) training: ResNet-50 with AMP and channels_last, one epoch of `byoc.training.loop` on
      synthetic tensors (the limit: no decoding) and one on a generated 224 px JPEG ImageFolder
      through `byoc.training.data` (the real data path); images/s of each, their ratio, and the
      host syncs per step that CUDA's sync debug mode counted;
  (b) serving: `byoc.serve.handler` on the artifact that training wrote (TorchScript, frozen),
      the forward pass at batch 1 and at the best batch: p50 ms and images/s;
  (c) resume: a run stopped by SIGTERM mid-epoch and resumed, against a straight run.

Writes bench/results/gpu.json and prints one table. `--device cpu --quick` runs the same code
paths on a CPU in seconds (tests/test_bench.py does), so the script cannot rot between GPU runs.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def _job(root: Path, data_root: Path):
    from byoc.training.contract import Job

    return Job.one_host(root / "opt_ml", {"training": data_root}, os.cpu_count() or 1, torch.cuda.device_count())


def write_jpegs(root: Path, per_split: dict[str, int], classes: int, size: int) -> Path:
    """A dogImages-layout folder of random-texture JPEGs, `size` px on the short side."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in per_split.items():
        for i in range(count):
            folder = root / split / f"{i % classes + 1:03d}.class{i % classes}"
            folder.mkdir(parents=True, exist_ok=True)
            base = rng.integers(0, 255, (size // 8, size * 4 // 24, 3), dtype=np.uint8)
            Image.fromarray(base).resize((size * 4 // 3, size)).save(folder / f"{i:05d}.jpg", quality=90)
    return root


def _sync_warnings(fn):
    """Run fn() under CUDA's sync debug mode; (its result, the number of host syncs it made)."""
    if not torch.cuda.is_available():
        return fn(), None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            result = fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return result, sum("synchroniz" in str(w.message) for w in caught)


def train_throughput(args, work: Path) -> dict:
    """(a): one timed epoch (after a warm-up one) on synthetic tensors and on JPEGs, the same loop."""
    from byoc.core.preprocessing import Preprocessing
    from byoc.training import data, distributed, monitor
    from byoc.training.contract import Amp, TrainConfig
    from byoc.training.distributed import StopAgreement, StopSignal
    from byoc.training.loop import EpochStats, train_one_epoch
    from byoc.training.train import build_model

    amp = Amp.OFF if args.device == "cpu" else Amp.AUTO
    cfg = TrainConfig(
        arch=args.arch,
        image_size=args.image_size,
        batch_size=args.batch_size,
        pretrained=False,
        amp=amp,
        channels_last="true",
        epochs=1,
        log_every=50,
        num_workers=-1,
    )
    images = write_jpegs(
        work / "jpegs",
        {"train": args.images, "valid": args.batch_size, "test": args.batch_size},
        classes=10,
        size=args.image_size * 8 // 7,
    )
    job = _job(work, images)
    rt = distributed.setup(job)
    loaders = data.build(job, cfg, rt, Preprocessing.for_size(args.image_size))
    net, opt = build_model(job, cfg, rt, loaders, saved_speed=None)
    steps = len(loaders.train)
    g = torch.Generator().manual_seed(0)
    fake = [
        (
            torch.randn(cfg.batch_size, 3, cfg.image_size, cfg.image_size, generator=g),
            torch.randint(0, 10, (cfg.batch_size,), generator=g),
            [],
        )
        for _ in range(min(steps, 4))
    ]
    pin = rt.device.type == "cuda"
    fake = [(x.pin_memory() if pin else x, y.pin_memory() if pin else y, s) for x, y, s in fake]
    synthetic = [fake[i % len(fake)] for i in range(steps)]

    def epoch(loader) -> tuple[float, int | None]:
        log = monitor.StepLog(cfg.log_every, monitor.Rules(), monitor.TensorBoard(None), rt, steps)
        stop = StopAgreement(StopSignal(), rt)

        def once():
            stats = EpochStats.zeros(rt.device)
            start = time.perf_counter()
            train_one_epoch(net, loader, opt, rt, 0, stats, log, stop)
            stats.reduced(rt)  # the epoch's end reads the totals back: the queue is drained here
            return time.perf_counter() - start

        return _sync_warnings(once)

    epoch(synthetic[: max(2, steps // 4)])  # warm-up: cudnn.benchmark's search, allocator, kernels
    limit_s, limit_syncs = epoch(synthetic)
    epoch(loaders.train)  # warm-up of the loader's workers and page cache
    data_s, data_syncs = epoch(loaders.train)
    n = steps * cfg.batch_size
    return {
        "arch": cfg.arch,
        "batch_size": cfg.batch_size,
        "image_size": cfg.image_size,
        "steps": steps,
        "amp": opt.speed.amp.value,
        "channels_last": opt.speed.channels_last,
        "loader_workers": loaders.workers,
        "synthetic_images_per_s": round(n / limit_s, 1),
        "jpeg_images_per_s": round(n / data_s, 1),
        "data_path_over_limit": round(limit_s / data_s, 3),
        "host_syncs_per_step": None if limit_syncs is None else round(limit_syncs / steps, 3),
        "host_syncs_per_step_jpeg": None if data_syncs is None else round(data_syncs / steps, 3),
    }


def serve_latency(args, work: Path) -> dict:
    """(b): the handler's forward pass on the device at batch 1 and larger batches."""
    from byoc.core import artifact
    from byoc.core.architecture import build
    from byoc.core.preprocessing import Preprocessing
    from byoc.serve.handler import ImageClassifierHandler, pick_device

    model_dir = work / "model"
    meta = artifact.ModelMeta(
        arch=args.arch, labels=[f"c{i}" for i in range(133)], preprocessing=Preprocessing.for_size(args.image_size)
    )
    artifact.save(model_dir, build(args.arch, 133).eval(), meta)
    handler = ImageClassifierHandler()
    handler.load(model_dir, pick_device() if args.device == "cuda" else torch.device("cpu"))
    rows = {}
    for batch in args.serve_batches:
        x = torch.randn(batch, 3, args.image_size, args.image_size).numpy()  # the handler's stages pass numpy
        times = []
        for i in range(args.serve_repeats + 3):
            start = time.perf_counter()
            handler.inference(x)  # returns CPU probabilities: the device has finished
            if i >= 3:
                times.append(time.perf_counter() - start)
        p50 = statistics.median(times)
        rows[batch] = {"p50_ms": round(p50 * 1e3, 2), "images_per_s": round(batch / p50, 1)}
    best = max(rows, key=lambda b: rows[b]["images_per_s"])
    return {
        "device": str(handler.device),
        "batch_1": rows[min(rows)],
        "best_batch": best,
        "best": rows[best],
        "batches": rows,
    }


def resume_check(args, work: Path) -> dict:
    """(c): SIGTERM at a step of epoch 0, resume, and compare with a straight run's weights."""
    from byoc.training import train
    from byoc.training.contract import TrainConfig
    from byoc.training.distributed import StopAgreement

    images = write_jpegs(work / "small", {"train": 160, "valid": 40, "test": 40}, classes=4, size=72)
    cfg = TrainConfig(
        arch="resnet18",
        image_size=64,
        batch_size=32,
        pretrained=False,
        epochs=2,
        log_every=2,
        amp="off" if args.device == "cpu" else "auto",
        channels_last="true",
        num_workers=2,
    )
    straight = train.run(_job(work / "straight", images), cfg)
    job = _job(work / "resumed", images)
    real_poll, calls = StopAgreement.poll, {"n": 0}

    def sigterm_at_step_3(self):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_poll(self)

    StopAgreement.poll = sigterm_at_step_3  # type: ignore[method-assign]
    before = signal.getsignal(signal.SIGTERM)
    try:
        train.run(job, cfg)
        stopped = False
    except train.Interrupted:
        stopped = True
    finally:
        StopAgreement.poll = real_poll  # type: ignore[method-assign]
    resumed = train.run(job, cfg)
    signal.signal(signal.SIGTERM, before)
    return {
        "stopped_mid_epoch": stopped,
        "checkpoints": sorted(p.name for p in job.checkpoint_dir.glob("*.pt")),
        "same_weights": resumed["final_weights_sha256"] == straight["final_weights_sha256"],
        "straight_test_accuracy": straight["test_accuracy"],
        "resumed_test_accuracy": resumed["test_accuracy"],
    }


def table(doc: dict) -> str:
    t, s, r = doc["training"], doc["serving"], doc["resume"]
    rows = [
        ("device", doc["device_name"]),
        ("train: synthetic limit (img/s)", t["synthetic_images_per_s"]),
        ("train: JPEG data path (img/s)", t["jpeg_images_per_s"]),
        ("train: data path / limit", t["data_path_over_limit"]),
        ("train: host syncs per step", t["host_syncs_per_step"]),
        ("train: amp / channels_last / batch", f"{t['amp']} / {t['channels_last']} / {t['batch_size']}"),
        ("serve: batch 1 p50 ms (img/s)", f"{s['batch_1']['p50_ms']} ({s['batch_1']['images_per_s']})"),
        (f"serve: best batch {s['best_batch']} p50 ms (img/s)", f"{s['best']['p50_ms']} ({s['best']['images_per_s']})"),
        ("resume: stopped, same weights", f"{r['stopped_mid_epoch']}, {r['same_weights']}"),
        ("seconds", doc["seconds"]),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: checks the code paths, measures nothing")
    ap.add_argument("--out", type=Path, default=RESULTS / "gpu.json")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device here; run with --device cpu --quick to check the code paths", file=sys.stderr)
        return 2
    quick = args.quick
    args.arch = "resnet18" if quick else "resnet50"
    args.image_size = 32 if quick else 224
    args.batch_size = 8 if quick else 192
    args.images = 32 if quick else 192 * 24
    args.serve_batches = [1, 4] if quick else [1, 8, 32, 64, 128]
    args.serve_repeats = 3 if quick else 30
    if args.device == "cpu":
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="byoc-gpu-check-") as tmp:
        work = Path(tmp)
        doc = {
            "device_name": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
            "torch": torch.__version__,
            "quick": quick,
            "training": train_throughput(args, work / "train"),
            "serving": serve_latency(args, work / "serve"),
            "resume": resume_check(args, work / "resume"),
        }
    doc["seconds"] = round(time.monotonic() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(table(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
