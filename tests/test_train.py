"""The loop, in-process on small real data (handwritten digits)."""

import json
import math
import os
import signal

import pytest
import torch

from byoc.core import artifact
from byoc.training import checkpoint, data, distributed, monitor, train
from byoc.training.contract import Job, TrainConfig
from byoc.training.distributed import Runtime, StopAgreement
from tests.helpers.models import QUICK


@pytest.fixture(autouse=True)
def sigterm_handler_restored():
    """A run installs its checkpointing SIGTERM handler in this process: put pytest's back after."""
    before = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, before)


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
    return Job.one_host(tmp_path / "opt_ml", {"training": data_root}, num_cpus=2)


def test_run_writes_artifact_metrics_and_curves(tmp_path, small_data):
    job = make_job(tmp_path, small_data)
    metrics = train.run(job, TrainConfig(**QUICK))
    assert [e["epoch"] for e in metrics["epochs"]] == [0, 1]
    # test accuracy is over the whole test set: a multiple of 1/100, not a mean of batch means
    assert metrics["test_images"] == 100
    assert math.isclose(metrics["test_accuracy"] * 100, round(metrics["test_accuracy"] * 100), abs_tol=1e-6)
    saved = json.loads((job.output_data_dir / "metrics.json").read_text())
    assert (
        saved["world_size"] == 1
        and saved["skipped_images"] == 0
        and saved["samples_per_rank"]
        == [
            600,
        ]
    )
    assert (job.output_data_dir / "training_curves.png").stat().st_size > 1000
    assert list(job.tensorboard_dir.glob("events.out.tfevents.*"))
    net, meta = artifact.load(job.model_dir)
    assert meta.labels[0] == "zero" and meta.metrics["test_accuracy"] == metrics["test_accuracy"]


def predict_validation(model_dir, data_root) -> list[int]:
    """The exported model's top-1 class of each validation image, computed here from the artifact."""
    net, meta = artifact.load(model_dir)
    splits = data.load({"training": data_root}, meta.preprocessing, augment=False)
    with torch.inference_mode():
        return [int(net(splits.valid[i][0].unsqueeze(0)).argmax(1)) for i in range(len(splits.valid))]


def baseline_label_counts(model_dir) -> dict[str, int]:
    stats = json.loads((model_dir / "monitoring" / "statistics.json").read_text())
    label = next(f for f in stats["features"] if f["name"] == "predicted_label")
    return {b["value"]: b["count"] for b in label["string_statistics"]["distribution"]["categorical"]["buckets"]}


def test_the_monitoring_baseline_holds_the_exported_models_answers_on_the_validation_split(tmp_path, small_data):
    """The best epoch's evaluation is reused: its class counts are the exported weights' predictions."""
    job = make_job(tmp_path, small_data)
    train.run(job, TrainConfig(**QUICK))
    _, meta = artifact.load(job.model_dir)
    predicted = predict_validation(job.model_dir, small_data)
    assert baseline_label_counts(job.model_dir) == {label: predicted.count(i) for i, label in enumerate(meta.labels)}
    stats = json.loads((job.model_dir / "monitoring" / "statistics.json").read_text())
    features = {f["name"]: f for f in stats["features"]}
    assert stats["dataset"]["item_count"] == 100 and features["width"]["numerical_statistics"]["mean"] == 16
    constraints = json.loads((job.model_dir / "monitoring" / "constraints.json").read_text())
    assert constraints["features"][0]["string_constraints"]["domains"] == meta.labels


def test_the_baseline_is_computed_by_one_more_pass_when_the_best_epochs_answers_were_not_kept(
    tmp_path, small_data, monkeypatch
):
    job = make_job(tmp_path, small_data)
    scripted_validation(monkeypatch, [0.9, 0.5])  # validation scripted: no answers kept
    train.run(job, TrainConfig(**QUICK))
    predicted = predict_validation(job.model_dir, small_data)
    _, meta = artifact.load(job.model_dir)
    assert baseline_label_counts(job.model_dir) == {label: predicted.count(i) for i, label in enumerate(meta.labels)}


class Validation:
    """What `evaluate` returns, with the validation accuracy a test chose."""

    skipped: set = set()

    def __init__(self, accuracy):
        self.accuracy = accuracy

    def reduced(self, rt):
        return 1.0, self.accuracy, 100


def scripted_validation(monkeypatch, accuracies: list[float], weights_at_end: list | None = None) -> None:
    """Each epoch's validation accuracy taken in turn from `accuracies` (the test split is still
    evaluated for real); with `weights_at_end`, the weights each epoch ended with appended to it."""
    scripted = iter(accuracies)
    real_end, real_evaluate = train.end_of_epoch, train.evaluate

    def end_of_epoch(t, *rest):
        if weights_at_end is not None:
            weights_at_end.append({k: v.detach().clone() for k, v in t.net.state_dict().items()})
        monkeypatch.setattr(train, "evaluate", lambda *a, **k: Validation(next(scripted)))
        try:
            return real_end(t, *rest)
        finally:
            monkeypatch.setattr(train, "evaluate", real_evaluate)

    monkeypatch.setattr(train, "end_of_epoch", end_of_epoch)


def test_best_epoch_is_exported_not_the_last(tmp_path, small_data, monkeypatch):
    """Validation accuracy falls after epoch 0: the artifact holds epoch 0's weights, not the last ones."""
    job = make_job(tmp_path, small_data)
    weights_at_end: list[dict] = []
    scripted_validation(monkeypatch, [0.9, 0.5, 0.4], weights_at_end)
    metrics = train.run(job, TrainConfig(**{**QUICK, "epochs": 3}))
    assert metrics["best_epoch"] == 0 and metrics["best_val_accuracy"] == 0.9
    exported = torch.load(job.model_dir / "model.pt", weights_only=True)
    assert all(torch.equal(exported[k], v) for k, v in weights_at_end[0].items())
    assert not all(torch.equal(exported[k], v) for k, v in weights_at_end[2].items())


def test_each_epoch_records_the_learning_rate_it_trained_at(tmp_path, small_data):
    metrics = train.run(make_job(tmp_path, small_data), TrainConfig(**{**QUICK, "epochs": 3}))
    cosine = [QUICK["lr"] * (1 + math.cos(math.pi * e / 3)) / 2 for e in range(3)]
    assert [e["lr"] for e in metrics["epochs"]] == pytest.approx(cosine, rel=1e-9)


def test_tensorboard_steps_are_global_and_never_repeat(tmp_path, small_data):
    """300 training images in batches of 32: 10 steps an epoch (the last one short), not 300 // 32 = 9."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    job = make_job(tmp_path, small_data)
    train.run(job, TrainConfig(**{**QUICK, "log_every": 1}))
    events = EventAccumulator(str(job.tensorboard_dir))
    events.Reload()
    steps = [e.step for e in events.Scalars("train/step_loss")]
    assert steps == list(range(1, 21))


def test_tensorboard_steps_per_epoch_follow_the_world_size(tmp_path):
    """Each of 2 ranks runs half the steps of an epoch: the global step counts a rank's steps."""
    sampler = data.ShardSampler(300, 0, 2, seed=0, shuffle=True)
    loader = data.make_loader(list(range(300)), sampler, TrainConfig(batch_size=32), 0, Runtime(torch.device("cpu")))
    loaders = data.Loaders(labels=[], train_sampler=sampler, train=loader, valid=loader, test=loader, workers=0)
    assert loaders.steps_per_epoch == len(loader) == 5


def test_early_stopping_ends_the_run_after_patience_epochs_without_improvement(
    tmp_path, small_data, monkeypatch, caplog
):
    """Patience 2: epoch 2 ties the best (a tie is no improvement), epoch 3 improves and starts the
    count again, epoch 4 falls and epoch 5 ties epoch 3: the run ends after epoch 5, before epoch 6's
    better score, with epoch 3 the best. (Patience 0, off: test_best_epoch_is_exported_not_the_last
    runs every epoch though accuracy falls.)"""
    scripted_validation(monkeypatch, [0.5, 0.6, 0.6, 0.7, 0.4, 0.7, 0.9])
    with caplog.at_level("INFO", logger=train.log.name):
        metrics = train.run(
            make_job(tmp_path, small_data), TrainConfig(**{**QUICK, "epochs": 7, "early_stopping_patience": 2})
        )
    assert [e["epoch"] for e in metrics["epochs"]] == [0, 1, 2, 3, 4, 5]
    assert (metrics["best_epoch"], metrics["best_val_accuracy"]) == (3, 0.7)
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("early stopping")]
    assert said == ["early stopping: val_accuracy has not improved for 2 epochs (best 0.7000 at epoch 3)"]


def test_interrupted_run_resumes_to_the_same_weights(tmp_path, small_data, monkeypatch):
    straight = train.run(make_job(tmp_path / "a", small_data), TrainConfig(**QUICK))

    job = make_job(tmp_path / "b", small_data)
    calls = {"n": 0}
    real_poll = StopAgreement.poll

    def sigterm_at_step_5(self):  # a real SIGTERM, arriving in the middle of epoch 0
        calls["n"] += 1
        if calls["n"] == 5:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_poll(self)

    monkeypatch.setattr(StopAgreement, "poll", sigterm_at_step_5)
    with pytest.raises(train.Interrupted):
        train.run(job, TrainConfig(**QUICK))
    assert [p.name for p in job.checkpoint_dir.iterdir()] == ["checkpoint-00000-0000005.pt"]
    monkeypatch.setattr(StopAgreement, "poll", real_poll)
    resumed = train.run(job, TrainConfig(**QUICK))
    assert resumed["final_weights_sha256"] == straight["final_weights_sha256"]
    assert resumed["test_accuracy"] == straight["test_accuracy"]
    # the best epoch's validation answers travel in the checkpoint: the resumed run's baseline is the same
    first = make_job(tmp_path / "a", small_data).model_dir / "monitoring" / "statistics.json"
    assert (job.model_dir / "monitoring" / "statistics.json").read_text() == first.read_text()
    assert resumed["epochs"] == [
        {**e, "seconds": r["seconds"]} for e, r in zip(straight["epochs"], resumed["epochs"], strict=True)
    ]


def test_rules_fire_on_broken_run(caplog):
    rules = monitor.Rules(window=2)
    for step, loss in enumerate([1.0, 1.0, 2.0, 3.0, float("nan")]):
        rules.check(0, step, loss, 1e9 if step == 1 else 1e-9)
    text = caplog.text
    for rule in ("LossNotFinite", "ExplodingGradient", "VanishingGradient", "LossNotDecreasing"):
        assert f"rule={rule}" in text


def test_rules_stay_quiet_on_a_healthy_run(caplog):
    rules = monitor.Rules(window=5)
    for step in range(200):  # a loss that keeps falling, gradients of a normal size
        rules.check(step // 50, step, 2.0 * 0.99**step, 1.0 + 0.01 * (step % 7))
    assert "rule=" not in caplog.text


def test_shard_sampler_gives_every_rank_an_equal_share():
    a = data.ShardSampler(11, 0, 2, seed=1, shuffle=True)
    b = data.ShardSampler(11, 1, 2, seed=1, shuffle=True)
    ia, ib = [i for _, i in a], [i for _, i in b]
    assert set(ia + ib) == set(range(11)) and len(ia) == len(ib) == 6  # padded by one
    a.set_epoch(1)
    assert [i for _, i in a] != ia  # reshuffled per epoch
    a.set_epoch(1, skip=2)
    assert len(list(a)) == len(a) == 4


def test_evaluation_shards_count_every_image_once():
    shards = [list(data.ShardSampler(11, r, 3, seed=0, shuffle=False)) for r in range(3)]
    assert sorted(sum(shards, [])) == list(range(11))


class Numbered:
    """A dataset of `size` one-pixel images whose label is their index, read as ShardSampler keys them:
    (epoch, index) while shuffling (training), the bare index otherwise (evaluation)."""

    def __init__(self, size: int):
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, key):
        index = key[1] if isinstance(key, tuple) else key
        return torch.zeros(1), index, None


@pytest.mark.parametrize(
    "images, shuffle, batches",
    [
        (65, True, [32, 32]),  # a last training batch of one image breaks BatchNorm: dropped
        (66, True, [32, 32, 2]),  # a last batch of two trains
        (1, True, [1]),  # a split of one image still trains on it
        (65, False, [32, 32, 1]),  # evaluation counts every image
    ],
)
def test_only_a_last_training_batch_of_one_is_dropped(images, shuffle, batches):
    sampler = data.ShardSampler(images, 0, 1, seed=0, shuffle=shuffle)
    loader = data.make_loader(
        Numbered(images), sampler, TrainConfig(batch_size=32), 0, Runtime(device=torch.device("cpu"))
    )
    seen = [labels.tolist() for _, labels, _ in loader]
    assert [len(batch) for batch in seen] == batches
    assert len(set(sum(seen, []))) == sum(batches)  # no image twice
    loaders = data.Loaders(labels=[], train_sampler=sampler, train=loader, valid=loader, test=loader, workers=0)
    assert loaders.steps_per_epoch == len(batches)


def _union_worker(rank: int, world: int, store: str, per_rank: list[set[str]], out) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        rt = Runtime(device=torch.device("cpu"), rank=rank, world_size=world)
        out.put((rank, sorted(distributed.union_across_ranks(per_rank[rank], rt))))
    finally:
        dist.destroy_process_group()


def test_union_across_ranks_counts_a_file_seen_by_several_ranks_once(tmp_path):
    """Two gloo processes: a corrupt file met by both ranks (in different epochs) is one file."""
    import torch.multiprocessing as mp

    per_rank = [{"a.jpg", "b.jpg"}, {"b.jpg", "c.jpg"}]
    ctx = mp.get_context("spawn")
    out = ctx.SimpleQueue()
    mp.start_processes(_union_worker, args=(2, str(tmp_path / "store"), per_rank, out), nprocs=2, start_method="spawn")
    results = dict(out.get() for _ in range(2))
    assert results == {0: ["a.jpg", "b.jpg", "c.jpg"], 1: ["a.jpg", "b.jpg", "c.jpg"]}


def test_union_across_ranks_single_process_is_the_set_itself():
    items = {"a.jpg"}
    assert distributed.union_across_ranks(items, Runtime(device=torch.device("cpu"))) is items


def _ddp_resume_worker(rank: int, world: int, ports: list[int], data_root, tmp_path, out) -> None:
    """One of two gloo ranks: a straight run, then a run stopped mid-epoch and resumed."""
    import os

    import torch.distributed as dist

    os.environ.update(
        {"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1"}
    )
    cfg = TrainConfig(**{**QUICK, "epochs": 1, "batch_size": 16})
    os.environ["MASTER_PORT"] = str(ports[0])
    straight = train.run(make_job(tmp_path / "straight", data_root), cfg)

    job = make_job(tmp_path / "resumed", data_root)  # one /opt/ml on one host: rank 0 writes, both read
    calls = {"n": 0}
    real_poll = StopAgreement.poll

    def sigterm_on_rank_1_at_step_2(self):  # one host told to stop; the agreement stops both
        calls["n"] += 1
        if calls["n"] == 2 and rank == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_poll(self)

    StopAgreement.poll = sigterm_on_rank_1_at_step_2
    os.environ["MASTER_PORT"] = str(ports[1])
    try:
        train.run(job, cfg)
        raise AssertionError("the stop was not reached")
    except train.Interrupted:
        dist.destroy_process_group()
    StopAgreement.poll = real_poll
    # rank 0 writes the checkpoint while rank 1 goes on; the next run's rendezvous waits for both
    stopped_at = [p.name for p in checkpoint.candidates(job.checkpoint_dir)] if rank == 0 else None
    os.environ["MASTER_PORT"] = str(ports[2])
    resumed = train.run(job, cfg)
    got = {k: (straight[k], resumed[k]) for k in ("epochs", "samples_per_rank", "final_weights_sha256")}
    out.put((rank, {**got, "stopped_at": stopped_at}))


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
        # rank 1's signal came during step 2; both ranks read the agreement one step later
        assert got["stopped_at"] == (["checkpoint-00000-0000003.pt"] if rank == 0 else None)


def test_resume_with_another_world_size_puts_the_saved_totals_on_rank_0(caplog):
    entries = [
        {"loss_sum": 2.0, "correct": 1.0, "count": 4.0, "skipped": ["a.jpg"], "samples": 10},
        {"loss_sum": 3.0, "correct": 2.0, "count": 4.0, "skipped": ["b.jpg"], "samples": 10},
    ]
    cpu = torch.device("cpu")
    same = [train.resumed_progress({"ranks": entries}, Runtime(cpu, rank=r, world_size=2)) for r in (0, 1)]
    assert [(s.totals(), n) for s, n in same] == [
        ({"loss_sum": 2.0, "correct": 1.0, "count": 4.0, "skipped": ["a.jpg"]}, 10),
        ({"loss_sum": 3.0, "correct": 2.0, "count": 4.0, "skipped": ["b.jpg"]}, 10),
    ]
    rank0, n0 = train.resumed_progress({"ranks": entries}, Runtime(cpu, rank=0, world_size=3))
    rank2, n2 = train.resumed_progress({"ranks": entries}, Runtime(cpu, rank=2, world_size=3))
    assert (rank0.totals(), n0) == ({"loss_sum": 5.0, "correct": 3.0, "count": 8.0, "skipped": ["a.jpg", "b.jpg"]}, 20)
    assert (rank2.count, n2) == (0, 0)
    assert "checkpoint written by 2 process(es), resumed by 3" in caplog.text
    # a checkpoint from before per-rank entries: rank 0's totals
    old, n = train.resumed_progress({"partial": [2.0, 1.0, 4.0, ["a.jpg"]]}, Runtime(cpu))
    assert (old.totals(), n) == ({"loss_sum": 2.0, "correct": 1.0, "count": 4.0, "skipped": ["a.jpg"]}, 0)


@pytest.mark.parametrize(
    "device, cores, world, expected",
    [
        ("cpu", 2, 1, 0),
        ("cpu", 4, 1, 1),
        ("cpu", 8, 1, 2),
        ("cpu", 96, 1, 8),
        ("cpu", 8, 2, 1),
        ("cuda", 2, 1, 1),
        ("cuda", 8, 1, 7),
        ("cuda", 96, 8, 8),
    ],
)
def test_default_loader_workers_follow_device_and_cores(tmp_path, device, cores, world, expected):
    job = Job.one_host(tmp_path, {}, num_cpus=cores)
    rt = Runtime(device=torch.device(device), world_size=world)
    assert data.num_workers(TrainConfig(), job, rt) == expected
    assert data.num_workers(TrainConfig(num_workers=3), job, rt) == 3
