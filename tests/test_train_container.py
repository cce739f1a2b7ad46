"""The training image as SageMaker runs it: `docker run byoc-train train` on an /opt/ml tree."""

from __future__ import annotations

import json
import re
import shutil
import time
import uuid

import pytest
from PIL import Image

from byoc.training import checkpoint
from tests import dockerutil as du

pytestmark = pytest.mark.container

# amp and channels-last are fixed: "auto" picks whichever setting measures fastest at start, so
# the run's numerics would change from run to run. (At these 16 px, `auto` on CPU no longer offers
# bf16, which gave random NaN gradients: see speed.CPU_BF16_MIN_IMAGE_SIZE.) The two-host test keeps
# "auto" to cover the measured choice being shared by every rank.
FAST = {
    "arch": "resnet18",
    "image-size": 16,
    "pretrained": "false",
    "epochs": "2",
    "batch-size": "32",
    "lr": "0.001",
    "num-workers": "1",
    "log-every": "2",
    "amp": "off",
    "channels-last": "false",
}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """Real digits, 16 px, 20/5/5 per class, with mixed image modes and one corrupt file."""
    from byoc.local.demo_data import write_demo_dataset

    root = tmp_path_factory.mktemp("tiny") / "dogImages"
    write_demo_dataset(root, size=16)
    for split, keep in (("train", 20), ("valid", 5), ("test", 5)):
        for cls in (root / split).iterdir():
            for extra in sorted(cls.iterdir())[keep:]:
                extra.unlink()
    zero = root / "train" / "01.zero"
    first = sorted(zero.iterdir())
    Image.open(first[0]).convert("RGBA").save(zero / "rgba.png")
    Image.open(first[1]).convert("CMYK").save(zero / "cmyk.jpg")
    Image.open(first[2]).convert("P").save(zero / "palette.gif")
    Image.open(first[3]).convert("L").save(zero / "grey.JPEG")
    (zero / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 64)
    return root


@pytest.fixture(scope="module")
def ddp_data(tiny_data, tmp_path_factory):
    """tiny_data with four corrupt training files (208 files: 104 a rank and epoch, no padding)."""
    root = tmp_path_factory.mktemp("ddp") / "dogImages"
    shutil.copytree(tiny_data, root)
    for cls in ("03.two", "06.five", "09.eight"):
        (root / "train" / cls / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 32)
    return root


def _corrupt_files_per_rank(root, world: int, epochs: int, seed: int = 42) -> list[set[str]]:
    """Which corrupt training files each rank reads over the run, by the job's own sampler."""
    from byoc.training.data import ShardSampler, scan_split

    _, samples = scan_split(root / "train")
    per_rank = []
    for rank in range(world):
        sampler, seen = ShardSampler(len(samples), rank, world, seed, shuffle=True), set()
        for epoch in range(epochs):
            sampler.set_epoch(epoch)
            seen |= {str(samples[i].path) for _, i in sampler if samples[i].path.name.startswith("corrupt")}
        per_rank.append(seen)
    return per_rank


def _opt_ml(tmp_path, data, hps=None, **kw):
    return du.make_opt_ml(tmp_path / "opt_ml", {**FAST, **(hps or {})}, {"training": data}, **kw)


def _log(proc) -> str:
    return proc.stdout + proc.stderr


def _sha(text: str) -> set[str]:
    return set(re.findall(r"final_weights_sha256=([0-9a-f]{64})", text))


def test_trains_on_mixed_modes_with_corrupt_file(train_image, tiny_data, tmp_path):
    root = _opt_ml(tmp_path, tiny_data, {"profile-steps": "2"})
    proc = du.train_container(root)
    log = _log(proc)
    assert proc.returncode == 0, log[-4000:]
    summary = "\n".join(line for line in log.splitlines() if "loss=" in line)
    number = r"[0-9]+\.[0-9]+"  # fp32 at lr 0.001 stays finite: a nan or inf here is a regression
    assert re.search(
        rf"epoch=1 train_loss={number} train_accuracy={number} val_loss={number} val_accuracy={number}", log
    ), summary
    assert re.search(rf"test_loss={number} test_accuracy={number} test_images=50 skipped_images=1", log), summary
    from byoc.aws.metrics import METRIC_DEFINITIONS, parse  # the definitions training jobs are created with

    scraped = {}
    for line in log.splitlines():
        scraped.update(parse(line))
    assert set(scraped) == {d["Name"] for d in METRIC_DEFINITIONS}, summary
    assert scraped["epoch"] == 1
    meta = json.loads((root / "model" / "model.json").read_text())
    assert meta["labels"] == ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    assert (root / "model" / "model.pt").stat().st_size > 1_000_000
    metrics = json.loads((root / "output" / "data" / "metrics.json").read_text())
    assert metrics["skipped_images"] == 1 and metrics["world_size"] == 1
    assert [e["epoch"] for e in metrics["epochs"]] == [0, 1]
    assert {"train_loss", "val_loss", "val_accuracy"} <= set(metrics["epochs"][0])
    assert metrics["test_images"] == 50
    assert (root / "output" / "data" / "training_curves.png").exists()
    assert list((root / "output" / "tensorboard").glob("events.out.tfevents.*"))
    assert (root / "output" / "data" / "profile" / "top_operators.txt").read_text().strip()
    assert (root / "output" / "data" / "profile" / "trace.json").stat().st_size > 0
    assert not (root / "output" / "failure").exists()
    assert (root / "output" / "success").exists()


def test_bad_hyperparameter_fails_with_reason(train_image, tiny_data, tmp_path):
    root = _opt_ml(tmp_path, tiny_data, {"learning-rate": "0.1"})
    proc = du.train_container(root)
    assert proc.returncode != 0
    reason = (root / "output" / "failure").read_text()
    assert "learning-rate" in reason[:300] and "lr" in reason and "Traceback" not in reason


def test_bad_value_fails_with_reason(train_image, tiny_data, tmp_path):
    root = _opt_ml(tmp_path, tiny_data, {"epochs": "many"})
    proc = du.train_container(root)
    assert proc.returncode != 0
    assert "epochs='many' must be an integer" in (root / "output" / "failure").read_text()


def test_missing_channel_fails_with_reason(train_image, tmp_path, tiny_data):
    root = du.make_opt_ml(tmp_path / "opt_ml", FAST, {"train": tiny_data / "train"})
    proc = du.train_container(root)
    assert proc.returncode != 0
    reason = (root / "output" / "failure").read_text()
    assert reason.startswith("DataError: missing data for split(s) valid, test")


def test_pretrained_without_network_suggests_fix(train_image, tiny_data, tmp_path):
    root = _opt_ml(tmp_path, tiny_data, {"pretrained": "true"})
    proc = du.train_container(root)
    assert proc.returncode != 0
    reason = (root / "output" / "failure").read_text()
    assert "pretrained=false" in reason and "weights" in reason


def _weights_folder(tmp_path, filename: str, arch: str = "resnet18"):
    """A folder holding one state dict of `arch` as `filename` (what `byoc weights upload` puts on S3)."""
    import torch
    from torchvision import models

    folder = tmp_path / "weights"
    folder.mkdir()
    torch.save(models.get_model(arch, weights=None).state_dict(), folder / filename)
    return folder


def test_pretrained_weights_come_from_the_weights_channel_without_network(train_image, tiny_data, tmp_path):
    """--network none: the only way to pretrained weights is the 'weights' channel."""
    weights = _weights_folder(tmp_path, "resnet18-own.pth")
    hps = {"pretrained": "true", "epochs": "1"}
    root = du.make_opt_ml(tmp_path / "opt_ml", {**FAST, **hps}, {"training": tiny_data, "weights": weights})
    proc = du.train_container(root)
    log = _log(proc)
    assert proc.returncode == 0, log[-3000:]
    assert "loaded pretrained resnet18 weights from /opt/ml/input/data/weights/resnet18-own.pth" in log
    assert (root / "output" / "success").exists()


def test_another_architectures_weights_file_fails_with_reason(train_image, tiny_data, tmp_path):
    published = "resnet34-b627a593.pth"  # torchvision's file for resnet34, not for the job's resnet18
    weights = _weights_folder(tmp_path, published, "resnet34")
    root = du.make_opt_ml(
        tmp_path / "opt_ml", {**FAST, "pretrained": "true"}, {"training": tiny_data, "weights": weights}
    )
    proc = du.train_container(root)
    assert proc.returncode != 0
    reason = (root / "output" / "failure").read_text()
    assert reason.startswith(f"ConfigError: the 'weights' channel: {published} is torchvision's resnet34 weights")


def test_cli_overrides_and_no_config_files(train_image, tiny_data, tmp_path):
    """EC2/laptop use: only the data is mounted; options on the command line."""
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    out = tmp_path / "model"
    out.mkdir(mode=0o777)
    proc = du.run(
        [
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            f"{data}:/opt/ml/input/data/training",
            "-v",
            f"{out}:/opt/ml/model",
            du.TRAIN_IMAGE,
            "train",
            "--epochs",
            "1",
            "--arch",
            "resnet18",
            "--image-size=16",
            "--no-pretrained",
            "--batch-size",
            "64",
        ],
        timeout=900,
    )
    assert proc.returncode == 0, _log(proc)[-3000:]
    assert "epoch=0 train_loss" in _log(proc) and "epoch=1 train_loss" not in _log(proc)
    assert json.loads((out / "model.json").read_text())["arch"] == "resnet18"


def test_two_hosts_train_one_model(train_image, tiny_data, tmp_path):
    """Two containers as algo-1 and algo-2 on the host network: DDP over gloo on loopback."""
    hosts = ["algo-1", "algo-2"]
    tag = uuid.uuid4().hex[:8]
    roots, names = {}, {}
    for host in hosts:
        hps = {**FAST, "amp": "auto", "channels-last": "auto"}  # rank 0 measures, every rank uses its choice
        roots[host] = du.make_opt_ml(tmp_path / host, hps, {"training": tiny_data}, hosts=hosts, current_host=host)
        names[host] = f"byoc-test-{host}-{tag}"
    try:
        for host in hosts:
            du.run(
                [
                    "run",
                    "-d",
                    "--name",
                    names[host],
                    "--network",
                    "host",
                    "--hostname",
                    host,
                    "--add-host",
                    "algo-1:127.0.0.1",
                    "--add-host",
                    "algo-2:127.0.0.1",
                    "--shm-size",
                    "1g",
                    "-v",
                    f"{roots[host]}:/opt/ml",
                    du.TRAIN_IMAGE,
                    "train",
                ],
                check=True,
            )
        codes = {h: int(du.run(["wait", names[h]], timeout=900).stdout.strip()) for h in hosts}
        logs = {h: _log(du.run(["logs", names[h]])) for h in hosts}
    finally:
        for host in hosts:
            du.run(["rm", "-f", names[host]])
    assert codes == {"algo-1": 0, "algo-2": 0}, logs
    shas = _sha(logs["algo-1"]) | _sha(logs["algo-2"])
    assert len(shas) == 1, shas  # every rank holds the same model
    metrics = json.loads((roots["algo-1"] / "output" / "data" / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    # 205 training files (200 digits, 4 extra modes, 1 corrupt) padded to 206: 103 a rank and epoch
    assert metrics["samples_per_rank"] == [206, 206]
    assert (roots["algo-1"] / "model" / "model.pt").exists()
    assert not any((roots["algo-2"] / "model").iterdir())
    assert not (roots["algo-2"] / "output" / "data" / "metrics.json").exists()
    assert "--nnodes=2" in logs["algo-2"] and "--node_rank=1" in logs["algo-2"]


def test_one_host_two_processes(train_image, ddp_data, tmp_path):
    root = _opt_ml(tmp_path, ddp_data, {"processes-per-host": "2", "epochs": "2"})
    proc = du.train_container(root)
    log = _log(proc)
    assert proc.returncode == 0, log[-4000:]
    assert len(_sha(log)) == 1 and log.count("final_weights_sha256=") == 2
    metrics = json.loads((root / "output" / "data" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["samples_per_rank"] == [208, 208]
    # Every corrupt file is read every epoch, by one rank or the other: each counts once, however
    # many ranks met it. The shuffle puts some on both ranks, so a per-rank sum would say more.
    corrupt = {str(p) for p in (ddp_data / "train").rglob("corrupt.*")}
    per_rank = _corrupt_files_per_rank(ddp_data, world=2, epochs=2)
    assert len(corrupt) == 4 and sum(map(len, per_rank)) > len(corrupt), per_rank
    assert metrics["skipped_images"] == len(corrupt), metrics
    assert re.search(rf"test_images=50 skipped_images={len(corrupt)}\b", log), log[-3000:]


def test_sigterm_saves_checkpoint_and_rerun_resumes_to_same_weights(train_image, tiny_data, tmp_path):
    hps = {"epochs": "3", "log-every": "1", "batch-size": "16", "amp": "off", "channels-last": "false"}
    straight = _opt_ml(tmp_path / "straight", tiny_data, hps)
    proc = du.train_container(straight)
    assert proc.returncode == 0, _log(proc)[-3000:]
    expected = _sha(_log(proc))

    root = _opt_ml(tmp_path / "spot", tiny_data, hps)
    name = f"byoc-test-spot-{uuid.uuid4().hex[:8]}"
    du.train_container(root, name=name, detach=True)
    try:
        deadline = time.monotonic() + 600
        while "epoch=1 step=3 " not in _log(du.run(["logs", name])):
            assert time.monotonic() < deadline, "training never reached epoch 1"
            time.sleep(0.5)
        started = time.monotonic()
        du.run(["stop", "-t", "120", name])
        stop_seconds = time.monotonic() - started
        code = int(du.run(["inspect", "-f", "{{.State.ExitCode}}", name]).stdout.strip())
        log = _log(du.run(["logs", name]))
    finally:
        du.run(["rm", "-f", name])
    assert code == 143, log[-3000:]
    assert stop_seconds < 60
    saved = sorted(p.name for p in (root / "checkpoints").glob("checkpoint-*.pt"))
    # Where the stop lands depends on timing (a later step of epoch 1, or early in epoch 2 when the
    # signal arrives during validation); it is always after a step, never on an epoch boundary.
    interrupted = [(int(m[1]), int(m[2])) for m in map(checkpoint.PATTERN.match, saved) if m and int(m[2]) > 0]
    assert len(interrupted) == 1 and interrupted[0] >= (1, 3), saved
    epoch, step = interrupted[0]
    assert not (root / "output" / "failure").exists()

    proc = du.train_container(root)
    log = _log(proc)
    assert proc.returncode == 0, log[-3000:]
    assert f"resumed_from_epoch={epoch} step={step} " in log, log[-3000:]
    assert _sha(log) == expected


def test_corrupt_newest_checkpoint_is_skipped(train_image, tiny_data, tmp_path):
    root = _opt_ml(tmp_path, tiny_data, {"epochs": "1"})
    assert du.train_container(root).returncode == 0
    (root / "checkpoints" / "checkpoint-00009-0000000.pt").write_bytes(b"PK\x03\x04 half written")
    (root / "model" / "model.pt").unlink()
    proc = du.train_container(root, "--epochs", "2")
    log = _log(proc)
    assert proc.returncode == 0, log[-3000:]
    assert "skipping unreadable checkpoint checkpoint-00009-0000000.pt" in log
    assert "resumed_from_epoch=1" in log


def test_rules_fire_on_a_broken_run(train_image, tiny_data, tmp_path):
    root = _opt_ml(tmp_path, tiny_data, {"lr": "1e6", "epochs": "2", "optimizer": "sgd"})
    proc = du.train_container(root)
    log = _log(proc)
    assert proc.returncode == 0, log[-3000:]
    assert "rule=LossNotFinite" in log or "rule=ExplodingGradient" in log
