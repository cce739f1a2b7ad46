"""The loop, in-process on small real data (handwritten digits)."""

import json
import math

import pytest
import torch

from byoc.core import artifact
from byoc.training import train
from byoc.training.contract import Job, TrainConfig


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    from byoc.local.demo_data import write_demo_dataset

    root = tmp_path_factory.mktemp("digits")
    write_demo_dataset(root, size=16)
    for split, keep in (("train", 30), ("valid", 10), ("test", 10)):  # per class
        for cls in (root / split).iterdir():
            for extra in sorted(cls.iterdir())[keep:]:
                extra.unlink()
    return root


def make_job(tmp_path, data_root) -> Job:
    out = tmp_path / "opt_ml"
    return Job(hosts=["algo-1"], current_host="algo-1", network_interface="lo", num_gpus=0, num_cpus=2,
               channels={"training": data_root}, model_dir=out / "model", output_dir=out / "output",
               output_data_dir=out / "output" / "data", tensorboard_dir=out / "output" / "tensorboard",
               checkpoint_dir=out / "checkpoints")


QUICK = dict(arch="resnet18", image_size=16, pretrained=False, epochs=2, batch_size=32, lr=3e-3, num_workers=0, log_every=5,
             amp="off", channels_last="false")  # fixed: "auto" picks by timing, which may differ run to run


def test_run_writes_artifact_metrics_and_curves(tmp_path, small_data):
    job = make_job(tmp_path, small_data)
    metrics = train.run(job, TrainConfig(**QUICK))
    assert [e["epoch"] for e in metrics["epochs"]] == [0, 1]
    # test accuracy is over the whole test set: a multiple of 1/100, not a mean of batch means
    assert metrics["test_images"] == 100
    assert math.isclose(metrics["test_accuracy"] * 100, round(metrics["test_accuracy"] * 100), abs_tol=1e-6)
    saved = json.loads((job.output_data_dir / "metrics.json").read_text())
    assert saved["world_size"] == 1 and saved["skipped_images"] == 0 and saved["samples_per_rank"] == [600, ]
    assert (job.output_data_dir / "training_curves.png").stat().st_size > 1000
    assert list(job.tensorboard_dir.glob("events.out.tfevents.*"))
    net, meta = artifact.load(job.model_dir)
    assert meta.labels[0] == "zero" and meta.metrics["test_accuracy"] == metrics["test_accuracy"]


def test_best_epoch_is_exported_not_the_last(tmp_path, small_data, monkeypatch):
    job = make_job(tmp_path, small_data)
    scores = iter([0.9, 0.5, 0.4])
    real = train.EpochStats.reduced

    def fake_reduced(self, rt):  # validation accuracy goes down after epoch 0
        loss, acc, n = real(self, rt)
        return (loss, next(scores), n) if self is not None and getattr(self, "_is_val", False) else (loss, acc, n)

    real_eval = train.evaluate

    def tagged_eval(*a, **k):
        stats = real_eval(*a, **k)
        stats._is_val = len(a) > 1 and a[1] is not None and tagged_eval.calls < 3
        tagged_eval.calls += 1
        return stats

    tagged_eval.calls = 0
    monkeypatch.setattr(train.EpochStats, "reduced", fake_reduced)
    monkeypatch.setattr(train, "evaluate", tagged_eval)
    metrics = train.run(job, TrainConfig(**{**QUICK, "epochs": 3}))
    assert metrics["best_epoch"] == 0 and metrics["best_val_accuracy"] == 0.9


def test_early_stopping(tmp_path, small_data):
    job = make_job(tmp_path, small_data)
    metrics = train.run(job, TrainConfig(**{**QUICK, "epochs": 6, "lr": 1e3, "early_stopping_patience": 1}))
    assert len(metrics["epochs"]) < 6


def test_interrupted_run_resumes_to_the_same_weights(tmp_path, small_data, monkeypatch):
    straight = train.run(make_job(tmp_path / "a", small_data), TrainConfig(**QUICK))

    job = make_job(tmp_path / "b", small_data)
    calls = {"n": 0}

    def stop_at_step_5(rt):  # SIGTERM arriving in the middle of epoch 0
        calls["n"] += 1
        if calls["n"] == 5:
            rt.stop_requested = True
        return rt.stop_requested

    monkeypatch.setattr(train, "_stop_agreed", stop_at_step_5)
    with pytest.raises(train.Interrupted):
        train.run(job, TrainConfig(**QUICK))
    assert [p.name for p in job.checkpoint_dir.iterdir()] == ["checkpoint-00000-0000005.pt"]
    monkeypatch.setattr(train, "_stop_agreed", lambda rt: False)
    resumed = train.run(job, TrainConfig(**QUICK))
    assert resumed["final_weights_sha256"] == straight["final_weights_sha256"]
    assert resumed["test_accuracy"] == straight["test_accuracy"]


def test_rules_fire_on_broken_run(caplog):
    rules = train.Rules(window=2)
    for step, loss in enumerate([1.0, 1.0, 2.0, 3.0, float("nan")]):
        rules.check(0, step, loss, 1e9 if step == 1 else 1e-9)
    text = caplog.text
    for rule in ("LossNotFinite", "ExplodingGradient", "VanishingGradient", "LossNotDecreasing"):
        assert f"rule={rule}" in text


def test_shard_sampler_gives_every_rank_an_equal_share():
    a = train.ShardSampler(11, 0, 2, seed=1, shuffle=True)
    b = train.ShardSampler(11, 1, 2, seed=1, shuffle=True)
    ia, ib = [i for _, i in a], [i for _, i in b]
    assert set(ia + ib) == set(range(11)) and len(ia) == len(ib) == 6  # padded by one
    a.set_epoch(1)
    assert [i for _, i in a] != ia  # reshuffled per epoch
    a.set_epoch(1, skip=2)
    assert len(list(a)) == len(a) == 4


def test_evaluation_shards_count_every_image_once():
    shards = [list(train.ShardSampler(11, r, 3, seed=0, shuffle=False)) for r in range(3)]
    assert sorted(sum(shards, [])) == list(range(11))


def test_last_training_batch_of_one_is_dropped():
    sampler = train.ShardSampler(65, 0, 1, seed=0, shuffle=True)
    loader = train.make_loader(list(range(65)), sampler, TrainConfig(batch_size=32), 0, train.Runtime(device=torch.device("cpu")))
    assert loader.drop_last


def _union_worker(rank: int, world: int, port: int, per_rank: list[set[str]], out) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        rt = train.Runtime(device=torch.device("cpu"), rank=rank, world_size=world)
        out.put((rank, sorted(train.union_across_ranks(per_rank[rank], rt))))
    finally:
        dist.destroy_process_group()


def test_union_across_ranks_counts_a_file_seen_by_several_ranks_once():
    """Two gloo processes: a corrupt file met by both ranks (in different epochs) is one file."""
    import socket

    import torch.multiprocessing as mp

    per_rank = [{"a.jpg", "b.jpg"}, {"b.jpg", "c.jpg"}]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.SimpleQueue()
    mp.start_processes(_union_worker, args=(2, port, per_rank, out), nprocs=2, start_method="spawn")
    results = dict(out.get() for _ in range(2))
    assert results == {0: ["a.jpg", "b.jpg", "c.jpg"], 1: ["a.jpg", "b.jpg", "c.jpg"]}


def test_union_across_ranks_single_process_is_the_set_itself():
    items = {"a.jpg"}
    assert train.union_across_ranks(items, train.Runtime(device=torch.device("cpu"))) is items


def _ddp_resume_worker(rank: int, world: int, ports: list[int], data_root, tmp_path, out) -> None:
    """One of two gloo ranks: a straight run, then a run stopped mid-epoch and resumed."""
    import os

    import torch.distributed as dist

    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1"})
    cfg = TrainConfig(**{**QUICK, "epochs": 1, "batch_size": 16})
    os.environ["MASTER_PORT"] = str(ports[0])
    straight = train.run(make_job(tmp_path / "straight", data_root), cfg)

    job = make_job(tmp_path / "resumed", data_root)  # one /opt/ml on one host: rank 0 writes, both read
    calls = {"n": 0}

    def stop_at_step_3(rt):  # the same step on both ranks, as the real agreement gives
        calls["n"] += 1
        return calls["n"] >= 3

    real_stop = train._stop_agreed
    train._stop_agreed = stop_at_step_3
    os.environ["MASTER_PORT"] = str(ports[1])
    try:
        train.run(job, cfg)
        raise AssertionError("the stop was not reached")
    except train.Interrupted:
        dist.destroy_process_group()
    train._stop_agreed = real_stop
    os.environ["MASTER_PORT"] = str(ports[2])
    resumed = train.run(job, cfg)
    out.put((rank, {k: (straight[k], resumed[k]) for k in ("epochs", "samples_per_rank", "final_weights_sha256")}))


def test_two_ranks_resume_mid_epoch_to_the_same_metrics(tmp_path, small_data):
    """Each rank's totals of the interrupted epoch are saved and restored, not rank 0's for all."""
    import socket

    import torch.multiprocessing as mp

    ports = []
    for _ in range(3):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    ctx = mp.get_context("spawn")
    out = ctx.SimpleQueue()
    mp.start_processes(_ddp_resume_worker, args=(2, ports, small_data, tmp_path, out), nprocs=2, start_method="spawn")
    results = dict(out.get() for _ in range(2))
    for rank, got in results.items():
        (straight, resumed) = got["epochs"]
        assert len(straight) == len(resumed) == 1
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
            assert resumed[0][key] == pytest.approx(straight[0][key], rel=1e-9), (rank, key, straight, resumed)
        assert got["samples_per_rank"] == ([150, 150], [150, 150]), rank  # 300 images, 150 a rank
        assert got["final_weights_sha256"][0] == got["final_weights_sha256"][1]


def test_resume_with_another_world_size_puts_the_saved_totals_on_rank_0(caplog):
    entries = [{"loss_sum": 2.0, "correct": 1.0, "count": 4.0, "skipped": ["a.jpg"], "samples": 10},
               {"loss_sum": 3.0, "correct": 2.0, "count": 4.0, "skipped": ["b.jpg"], "samples": 10}]
    cpu = torch.device("cpu")
    same = [train.resumed_progress({"ranks": entries}, train.Runtime(cpu, rank=r, world_size=2)) for r in (0, 1)]
    assert [(s.loss_sum, s.count, s.skipped, n) for s, n in same] == [(2.0, 4.0, {"a.jpg"}, 10), (3.0, 4.0, {"b.jpg"}, 10)]
    rank0, n0 = train.resumed_progress({"ranks": entries}, train.Runtime(cpu, rank=0, world_size=3))
    rank2, n2 = train.resumed_progress({"ranks": entries}, train.Runtime(cpu, rank=2, world_size=3))
    assert (rank0.loss_sum, rank0.correct, rank0.count, rank0.skipped, n0) == (5.0, 3.0, 8.0, {"a.jpg", "b.jpg"}, 20)
    assert (rank2.count, n2) == (0.0, 0)
    assert "checkpoint written by 2 process(es), resumed by 3" in caplog.text
    # a checkpoint from before per-rank entries: rank 0's totals
    old, n = train.resumed_progress({"partial": [2.0, 1.0, 4.0, ["a.jpg"]]}, train.Runtime(cpu))
    assert (old.loss_sum, old.count, old.skipped, n) == (2.0, 4.0, {"a.jpg"}, 0)


@pytest.mark.parametrize("device, cores, world, expected", [
    ("cpu", 2, 1, 0), ("cpu", 4, 1, 1), ("cpu", 8, 1, 2), ("cpu", 96, 1, 8), ("cpu", 8, 2, 1),
    ("cuda", 2, 1, 1), ("cuda", 8, 1, 7), ("cuda", 96, 8, 8)])
def test_default_loader_workers_follow_device_and_cores(tmp_path, device, cores, world, expected):
    job = Job(hosts=["algo-1"], current_host="algo-1", network_interface="lo", num_gpus=0, num_cpus=cores,
              channels={}, model_dir=tmp_path, output_dir=tmp_path, output_data_dir=tmp_path,
              tensorboard_dir=tmp_path, checkpoint_dir=tmp_path)
    rt = train.Runtime(device=torch.device(device), world_size=world)
    assert train.num_workers(TrainConfig(), job, rt) == expected
    assert train.num_workers(TrainConfig(num_workers=3), job, rt) == 3
