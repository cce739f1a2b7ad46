"""The training benchmark: images/s of the training container on a 224 px JPEG ImageFolder
against the same model's training steps on synthetic tensors in one process (the limit), and
the epoch time on the demo dataset."""

from __future__ import annotations

import json
import logging
import random
import re
import statistics
from pathlib import Path

from bench import containers

log = logging.getLogger("bench")
REPO = Path(__file__).resolve().parents[1]
IMAGE = "byoc-train:latest"


def write_jpeg_folder(
    root: Path, classes: int, train: int, valid: int, test: int, size: int = 224, seed: int = 0
) -> Path:
    """An ImageFolder (dogImages layout) of size x size JPEG crops of real photographs."""
    from PIL import Image, ImageOps
    from sklearn.datasets import load_sample_image

    if (root / "test").is_dir():
        return root
    rng = random.Random(seed)
    photos = [Image.fromarray(load_sample_image(n)) for n in ("china.jpg", "flower.jpg")]
    for split, count in (("train", train), ("valid", valid), ("test", test)):
        for c in range(classes):
            folder = root / split / f"{c + 1:03d}.class_{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                src = photos[c % 2]
                side = rng.randint(160, 420)
                x, y = rng.randint(0, src.width - side), rng.randint(0, src.height - side)
                img = src.crop((x, y, x + side, y + side)).resize((size, size), Image.Resampling.BILINEAR)
                if c >= 2:  # more classes than photos: mirrored and rotated variants
                    img = ImageOps.mirror(img).rotate(90 * (c // 2))
                img.save(folder / f"img_{i:04d}.jpg", quality=90)
    return root


def run_container(opt_ml_root: Path, data: Path, hps: dict, env: dict[str, str] | None = None) -> dict:
    """`docker run byoc-train train` as SageMaker would (plus `env`) in a fresh `opt_ml_root`;
    returns metrics.json. The folder replaces the last run's of that name: its checkpoints would
    make the job resume, and each run's left behind would pile up (about 0.5 GB a job)."""
    import shutil

    from byoc.local import containers as dc

    dc.remove_tree(dc.engine(), IMAGE, opt_ml_root)
    config = opt_ml_root / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "hyperparameters.json").write_text(json.dumps({k: str(v) for k, v in hps.items()}))
    (config / "resourceconfig.json").write_text(
        json.dumps({"current_host": "algo-1", "hosts": ["algo-1"], "network_interface_name": "lo"})
    )
    (config / "inputdataconfig.json").write_text(json.dumps({"training": {"TrainingInputMode": "File"}}))
    shutil.copytree(data, opt_ml_root / "input" / "data" / "training")
    for sub in ("model", "output/data", "checkpoints"):
        (opt_ml_root / sub).mkdir(parents=True, exist_ok=True)
    opts = [
        "--network",
        "none",
        "--hostname",
        "algo-1",
        "--add-host",
        "algo-1:127.0.0.1",
        "--shm-size",
        "1g",
        "-v",
        f"{opt_ml_root}:/opt/ml",
        *(x for k, v in (env or {}).items() for x in ("-e", f"{k}={v}")),
    ]
    proc = containers.run_once(IMAGE, ["train"], opts, "train", timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"training container exited {proc.returncode}: {(proc.stdout + proc.stderr)[-1500:]}")
    metrics = json.loads((opt_ml_root / "output" / "data" / "metrics.json").read_text())
    # The job's own speed choice (amp / channels_last = auto), from its log line.
    chosen = re.search(r"amp=(\w+) channels_last=(\w+)", proc.stdout + proc.stderr)
    metrics["speed"] = {"amp": chosen[1], "channels_last": chosen[2] == "True"} if chosen else {}
    return metrics


def run_limit(
    arch: str, classes: int, train: int, valid: int, batch: int, image_size: int, speed: dict, epochs: int = 2
) -> dict:
    """bench.trainlimit inside the training image: same torch, same cores, the container's speed choice."""
    proc = containers.run_once(
        IMAGE,
        [
            "-m",
            "bench.trainlimit",
            "--arch",
            arch,
            "--classes",
            str(classes),
            "--train",
            str(train),
            "--valid",
            str(valid),
            "--batch-size",
            str(batch),
            "--image-size",
            str(image_size),
            "--amp",
            speed.get("amp", "off"),
            "--channels-last",
            str(bool(speed.get("channels_last"))).lower(),
            "--epochs",
            str(epochs),
        ],
        [
            "--network",
            "none",
            "-v",
            f"{REPO / 'bench'}:/bench/bench:ro",
            "-e",
            "PYTHONPATH=/bench",
            "--entrypoint",
            "python3",
        ],
        "trainlimit",
    )
    if proc.returncode != 0:
        raise RuntimeError(f"bench.trainlimit exited {proc.returncode}: {proc.stderr.strip()[-1500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarise(rounds: list[dict], train_images: int) -> dict:
    """Container vs limit from interleaved rounds ({"container": [epoch s], "limit": [epoch s]}, the
    first epoch of each run left out: loader workers and oneDNN warming up). Each side's figure is
    its fastest epoch over all rounds: a neighbour on the box only ever slows an epoch down, so the
    minimum is the estimate of the undisturbed speed, for both sides alike (as timeit does). The
    median of the per-round ratios is kept beside it."""
    container = [s for r in rounds for s in r["container"][1:]]
    limit = [s for r in rounds for s in r["limit"][1:]]
    if not container or not limit:
        raise ValueError("every run needs at least two epochs")
    per_round = [statistics.median(r["limit"][1:]) / statistics.median(r["container"][1:]) for r in rounds]
    best_c, best_l = min(container), min(limit)
    return {
        "container_epoch_s": best_c,
        "limit_epoch_s": best_l,
        "container_images_per_s": round(train_images / best_c, 2),
        "limit_images_per_s": round(train_images / best_l, 2),
        "ratio": round(best_l / best_c, 3),
        "ratio_median_of_rounds": round(statistics.median(per_round), 3),
        "rounds": rounds,
    }


def run(work: Path, quick: bool = False, rounds: int = 2) -> dict:
    """Container vs limit on JPEGs (interleaved rounds, so that both see the same minutes of the
    box), and the demo dataset's epoch time."""
    classes, train, valid, test, batch = (4, 32, 8, 8, 32) if quick else (4, 64, 8, 8, 32)
    arch, size = "resnet18", 224
    epochs, rounds = (2, 1) if quick else (3, rounds)
    data = write_jpeg_folder(work / f"jpeg{size}_{classes}x{train}", classes, train, valid, test, size)
    hps = {
        "arch": arch,
        "image-size": size,
        "pretrained": "false",
        "epochs": epochs,
        "batch-size": batch,
        "log-every": 1000,
        "early-stopping-patience": 0,
    }
    measured, speed, limit = [], {}, {}
    for k in range(rounds):
        metrics = run_container(work / "opt_ml_jpeg", data, hps)
        speed = metrics.get("speed", {})
        limit = run_limit(arch, classes, train * classes, valid * classes, batch, size, speed, epochs)
        measured.append({"container": [e["seconds"] for e in metrics["epochs"]], "limit": limit["epochs_s"]})
        log.info(
            "training round %d: container epochs %s s, limit epochs %s s",
            k + 1,
            measured[-1]["container"],
            measured[-1]["limit"],
        )
    result = {
        "arch": arch,
        "image_size": size,
        "batch_size": batch,
        "train_images": train * classes,
        "valid_images": valid * classes,
        "speed": speed,
        "limit": {k: v for k, v in limit.items() if k != "epochs_s"},  # its settings; the epochs are in rounds
        **summarise(measured, train * classes),
    }
    log.info(
        "training: container %.2f img/s, limit %.2f img/s (ratio %.2f; median of rounds %.2f)",
        result["container_images_per_s"],
        result["limit_images_per_s"],
        result["ratio"],
        result["ratio_median_of_rounds"],
    )
    result["demo"] = train_demo(work, quick)
    return result


def train_demo(work: Path, quick: bool = False) -> dict:
    """The demo dataset trained in the training container with `make demo`'s settings (fewer
    epochs: the epoch time is the figure; the model feeds the top-1 checks): its epoch times, test
    accuracy, model directory and held-out test split."""
    from byoc.local.demo_data import write_demo_dataset

    demo = work / "demo"
    if not demo.exists():
        write_demo_dataset(demo)
    hps = {
        "arch": "resnet18",
        "image-size": 32,
        "pretrained": "false",
        "epochs": 2 if quick else 3,
        "batch-size": 64,
        "lr": 0.003,
    }
    root = work / "opt_ml_demo"
    metrics = run_container(root, demo, hps)
    seconds = [e["seconds"] for e in metrics["epochs"]]
    out = {
        "hyperparameters": hps,
        "epoch_s": seconds,
        "mean_epoch_s": round(sum(seconds) / len(seconds), 2),
        "test_accuracy": metrics["test_accuracy"],
        "model_dir": str(root / "model"),
        "dataset": str(demo),
        "test_split": str(demo / "test"),
    }
    log.info("demo dataset: %.1f s per epoch, test accuracy %.3f", out["mean_epoch_s"], metrics["test_accuracy"])
    return out
