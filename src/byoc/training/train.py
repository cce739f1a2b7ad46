"""The training job as one story, for one CPU, one GPU, or many GPUs and hosts under torchrun:

    set up the process -> build the data -> build the model and its optimisation -> resume from
    the newest checkpoint -> the epoch loop (train, evaluate, keep the best, checkpoint, stop
    early) -> finish (test the best model, write the artifact and metrics on global rank 0).

`main` is the entry of one worker process (torchrun's, or the only one); `launch` runs it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from byoc.core import artifact, half_precision
from byoc.core.errors import ByocError, ConfigError, first_line
from byoc.core.preprocessing import Preprocessing
from byoc.training import checkpoint, contract, data, distributed, monitor, speed
from byoc.training import model as model_factory
from byoc.training.contract import EXIT_STOPPED, Job, Optimizer, TrainConfig
from byoc.training.data import Loaders
from byoc.training.distributed import Runtime, StopAgreement, StopSignal
from byoc.training.loop import EpochStats, Optimization, evaluate, train_one_epoch

log = logging.getLogger("byoc.training")


class Interrupted(Exception):
    """SIGTERM arrived (spot interruption, StopTrainingJob): a checkpoint was saved."""


@dataclass
class Progress:
    """Where the run stands: what a checkpoint carries besides the weights and the optimiser."""

    epoch: int = 0  # the epoch to run (or the interrupted one)
    step: int = 0  # steps of `epoch` already done
    history: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"epoch": -1, "val_accuracy": -1.0, "state": None})
    epochs_without_improvement: int = 0
    partial: EpochStats | None = None  # this rank's totals of the interrupted epoch so far
    samples: int = 0  # this rank's samples over the finished epochs


@dataclass
class Training:
    """What every step of the story shares: the job, its settings, this process, its data and model."""

    job: Job
    cfg: TrainConfig
    rt: Runtime
    pre: Preprocessing
    loaders: Loaders
    net: nn.Module
    opt: Optimization


def run(job: Job, cfg: TrainConfig) -> dict:
    """Train, evaluate and (on global rank 0) write the artifact and metrics. Returns the metrics."""
    rt = distributed.setup(job)
    stop = StopAgreement(StopSignal().install(), rt)
    torch.manual_seed(cfg.seed)
    pre = Preprocessing.for_size(cfg.image_size)
    loaders = data.build(job, cfg, rt, pre)
    log_data(loaders, rt)
    resumed = checkpoint.load_newest(job.checkpoint_dir)
    net, opt = build_model(job, cfg, rt, loaders, saved_speed=resumed[0].get("speed") if resumed else None)
    t = Training(job, cfg, rt, pre, loaders, net, opt)
    progress = resume(resumed, t) if resumed else Progress()
    progress = fit(t, progress, stop)
    return finish(t, progress)


def log_data(loaders: Loaders, rt: Runtime) -> None:
    if rt.is_main:
        log.info(
            "data: %d classes, train=%d valid=%d test=%d images; world_size=%d device=%s workers=%d",
            len(loaders.labels),
            loaders.images["train"],
            loaders.images["valid"],
            loaders.images["test"],
            rt.world_size,
            rt.device,
            loaders.workers,
        )


# --------------------------------------------------------------------------- model and optimisation
def build_model(
    job: Job, cfg: TrainConfig, rt: Runtime, loaders: Loaders, saved_speed: dict | None
) -> tuple[nn.Module, Optimization]:
    """The network on the device in its memory format, and what optimises it."""
    num_classes = len(loaders.labels)
    net = model_factory.create(
        cfg.arch,
        num_classes,
        pretrained=cfg.pretrained,
        freeze_backbone=cfg.freeze_backbone,
        weights_file=weights_file(job),
    ).to(rt.device)
    choice = choose_speed(net, cfg, num_classes, rt, saved_speed)
    net = net.to(memory_format=choice.memory_format)
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = make_optimizer(cfg, params)
    return net, Optimization(
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs),
        scaler=torch.amp.GradScaler(rt.device.type, enabled=choice.dtype == torch.float16),
        criterion=nn.CrossEntropyLoss(),
        speed=choice,
    )


def make_optimizer(cfg: TrainConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if cfg.optimizer is Optimizer.SGD:
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay, nesterov=True)
    if cfg.optimizer is Optimizer.ADAM:
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def choose_speed(net: nn.Module, cfg: TrainConfig, num_classes: int, rt: Runtime, saved: dict | None) -> speed.Speed:
    """AMP and memory format: as saved in the checkpoint being resumed (a resumed run must compute
    exactly as the interrupted one did), else the fastest measured on rank 0, for all ranks."""
    if saved is not None:
        choice = speed.Speed.from_dict(saved)
    else:
        options = speed.candidates(cfg.amp, cfg.channels_last, rt.device, cfg.image_size)
        index = (
            options.index(speed.fastest(net, options, cfg.batch_size, cfg.image_size, num_classes, rt.device))
            if rt.is_main
            else 0
        )
        choice = options[distributed.broadcast_int(index, rt)]
    if rt.is_main:
        log.info("amp=%s channels_last=%s", choice.amp.value, choice.channels_last)
    return choice


def weights_file(job: Job) -> Path | None:
    """The 'weights' channel's state dict (pretrained weights without network access), if any."""
    folder = job.channels.get("weights")
    if folder is None:
        return None
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix in (".pth", ".pt"))
    if not files:
        raise ConfigError(f"the 'weights' channel {folder} holds no .pth or .pt file")
    if len(files) > 1:  # which one the job started from would be a guess
        names = ", ".join(p.name for p in files)
        raise ConfigError(f"the 'weights' channel {folder} holds {len(files)} weights files ({names}): keep one")
    return files[0]


def for_training(net: nn.Module, cfg: TrainConfig, rt: Runtime) -> nn.Module:
    """`net` as the loop runs it: wrapped in DDP across ranks, compiled when asked and possible."""
    model: nn.Module = net
    if rt.distributed:
        model = nn.parallel.DistributedDataParallel(
            net, device_ids=[rt.device.index] if rt.device.type == "cuda" else None
        )
    if cfg.compile:
        if shutil.which(os.environ.get("CXX", "g++")) or shutil.which("gcc"):
            model = torch.compile(model)  # type: ignore[assignment]
        elif rt.is_main:  # inductor compiles C++/Triton glue at run time
            log.warning(
                "compile=true ignored: torch.compile needs a C/C++ compiler, and this image has none "
                "(a slim runtime image). Training continues without compilation."
            )
    return model


# --------------------------------------------------------------------------- checkpoints
def save_checkpoint(t: Training, progress: Progress, epoch: int, step: int, stats: EpochStats) -> None:
    """Every rank calls this at the same point (an agreed stop, or the end of an epoch): each
    rank's share of the epoch so far goes into the checkpoint, which rank 0 writes."""
    ranks = distributed.gather_objects({**stats.totals(), "samples": progress.samples}, t.rt)
    if not t.rt.is_main:
        return
    state = {
        "model": t.net.state_dict(),
        "optimizer": t.opt.optimizer.state_dict(),
        "scheduler": t.opt.scheduler.state_dict(),
        "scaler": t.opt.scaler.state_dict(),
        "rng": checkpoint.rng_state(),
        "epoch": epoch,
        "step": step,
        "history": progress.history,
        "best": progress.best,
        "epochs_without_improvement": progress.epochs_without_improvement,
        "config": t.cfg.to_dict(),
        "speed": t.opt.speed.to_dict(),
        "ranks": ranks,
    }
    path = checkpoint.save(t.job.checkpoint_dir, state, epoch, step)
    log.info("checkpoint saved: %s", path)


def resume(resumed: tuple[dict, Path], t: Training) -> Progress:
    """Weights, optimiser, RNG and progress as the newest checkpoint left them."""
    state, path = resumed
    t.net.load_state_dict(state["model"])
    t.opt.optimizer.load_state_dict(state["optimizer"])
    t.opt.scheduler.load_state_dict(state["scheduler"])
    t.opt.scaler.load_state_dict(state["scaler"])
    checkpoint.set_rng_state(state["rng"])
    partial, samples = resumed_progress(state, t.rt)
    log.info("resumed_from_epoch=%d step=%d checkpoint=%s", state["epoch"], state["step"], path.name)
    return Progress(
        epoch=state["epoch"],
        step=state["step"],
        history=state["history"],
        best=state["best"],
        epochs_without_improvement=state.get("epochs_without_improvement", 0),
        partial=partial,
        samples=samples,
    )


def resumed_progress(state: dict, rt: Runtime) -> tuple[EpochStats, int]:
    """This rank's totals of the interrupted epoch so far, and its samples of the epochs before.

    A checkpoint holds one entry per rank. Resumed with the same world size, each rank takes
    its own. With another world size the shards differ, so no entry belongs to a new rank: rank 0
    carries the sum of them all, which keeps the epoch's reduced metrics and the total sample count
    right and attributes the saved samples to rank 0 in samples_per_rank.
    """
    entries = state.get("ranks")
    if entries is None:  # a checkpoint that saved rank 0's partial totals only
        loss_sum, correct, count, skipped = state["partial"]
        entries = [{"loss_sum": loss_sum, "correct": correct, "count": count, "skipped": skipped, "samples": 0}]
    if len(entries) == rt.world_size:
        mine = [entries[rt.rank]]
    else:
        if rt.is_main:
            log.warning(
                "checkpoint written by %d process(es), resumed by %d: rank 0 carries the interrupted "
                "epoch's totals so far and the samples of earlier epochs",
                len(entries),
                rt.world_size,
            )
        mine = entries if rt.is_main else []
    stats = EpochStats.zeros(rt.device)
    for entry in mine:
        stats.merge(EpochStats.from_totals(entry, rt.device))
    return stats, sum(e["samples"] for e in mine)


# --------------------------------------------------------------------------- the epoch loop
def fit(t: Training, progress: Progress, stop: StopAgreement) -> Progress:
    """Run the epochs from `progress` on; raises Interrupted after a checkpoint when the ranks agree to stop."""
    model = for_training(t.net, t.cfg, t.rt)
    board = monitor.TensorBoard(t.job.tensorboard_dir if t.rt.is_main else None)
    rules = monitor.Rules(scaled=t.opt.scaler.is_enabled())
    steps = monitor.StepLog(t.cfg.log_every, rules, board, t.rt, t.loaders.steps_per_epoch)
    first = progress.epoch
    for epoch in range(first, t.cfg.epochs):
        started = time.monotonic()
        stats, done, stopped = train_epoch(t, model, epoch, progress, steps, stop, profile=epoch == first)
        if stopped:
            save_checkpoint(t, progress, epoch, done, stats)
            board.close()
            raise Interrupted(f"stopped by SIGTERM at epoch {epoch} step {done}; checkpoint saved")
        record = end_of_epoch(t, model, epoch, stats, progress, started)
        monitor.epoch_line(record, t.rt, board)
        rules.report_skipped(epoch)
        stop_early = 0 < t.cfg.early_stopping_patience <= progress.epochs_without_improvement
        if (epoch + 1) % t.cfg.checkpoint_every == 0 or epoch + 1 == t.cfg.epochs or stop_early:
            save_checkpoint(t, progress, epoch + 1, 0, EpochStats.zeros(t.rt.device))
        if stop_early:
            if t.rt.is_main:
                log.info(
                    "early stopping: val_accuracy has not improved for %d epochs (best %.4f at epoch %d)",
                    progress.epochs_without_improvement,
                    progress.best["val_accuracy"],
                    progress.best["epoch"],
                )
            break
    board.close()
    return progress


def train_epoch(
    t: Training,
    model: nn.Module,
    epoch: int,
    progress: Progress,
    steps: monitor.StepLog,
    stop: StopAgreement,
    profile: bool,
) -> tuple[EpochStats, int, bool]:
    """One epoch's training steps, from where `progress` left it: (its totals, steps done, stopped)."""
    resuming = epoch == progress.epoch and progress.step > 0
    step0 = progress.step if resuming else 0
    stats = progress.partial if resuming and progress.partial is not None else EpochStats.zeros(t.rt.device)
    t.loaders.train_sampler.set_epoch(epoch, step0 * t.cfg.batch_size)
    prof = monitor.profiler(t.cfg) if t.rt.is_main and t.cfg.profile_steps and profile else None
    with prof if prof is not None else nullcontext():
        done, stopped = train_one_epoch(model, t.loaders.train, t.opt, t.rt, epoch, stats, steps, stop, step0, prof)
    if prof is not None:
        monitor.write_profile(prof, t.job)
    return stats, done, stopped


def end_of_epoch(
    t: Training, model: nn.Module, epoch: int, stats: EpochStats, progress: Progress, started: float
) -> dict:
    """Validate, record the epoch (with the learning rate it trained at), keep the best weights,
    step the schedule. Updates `progress` to the start of the next epoch; returns the record."""
    progress.samples += stats.count
    train_loss, train_acc, _ = stats.reduced(t.rt)
    answers: list = []
    val = evaluate(model, t.loaders.valid, t.opt.criterion, t.opt.speed, t.rt, answers=answers)
    val_loss, val_acc, _ = val.reduced(t.rt)
    record = {
        "epoch": epoch,
        "train_loss": train_loss,
        "train_accuracy": train_acc,
        "val_loss": val_loss,
        "val_accuracy": val_acc,
        "seconds": round(time.monotonic() - started, 2),
        "lr": t.opt.optimizer.param_groups[0]["lr"],
        "skipped": sorted(stats.skipped | val.skipped),
    }
    t.opt.scheduler.step()  # after the record: the rate above is the one this epoch used
    progress.history.append(record)
    if val_acc > progress.best["val_accuracy"]:
        weights = copy.deepcopy({k: v.cpu() for k, v in t.net.state_dict().items()})
        progress.best = {
            "epoch": epoch,
            "val_accuracy": val_acc,
            "state": weights,
            "answers": validation_answers(answers, t.rt),  # the baseline's, without another pass
        }
        progress.epochs_without_improvement = 0
    else:
        progress.epochs_without_improvement += 1
    progress.epoch, progress.step, progress.partial = epoch + 1, 0, None
    return record


def validation_answers(answers: list, rt: Runtime) -> dict[str, list]:
    """Every rank's top-1 classes and confidences on the validation split, put together (a collective
    call: every rank makes it). {"predicted": [...], "confidence": [...]}, empty when none were kept."""
    mine: dict[str, list] = {"predicted": [], "confidence": []}
    if answers:
        mine["predicted"] = torch.cat([a[0] for a in answers]).cpu().tolist()
        mine["confidence"] = torch.cat([a[1] for a in answers]).cpu().tolist()
    ranks = distributed.gather_objects(mine, rt)
    return {key: [x for rank in ranks for x in rank[key]] for key in mine}


def best_answers(t: Training, progress: Progress) -> dict[str, list]:
    """The exported weights' answers on the validation split: those of their epoch's evaluation, or,
    when that evaluation's were not kept, one more pass over the split."""
    kept = progress.best.get("answers")
    if kept and kept["predicted"]:
        return kept
    answers: list = []
    evaluate(t.net, t.loaders.valid, t.opt.criterion, t.opt.speed, t.rt, answers=answers)
    return validation_answers(answers, t.rt)


# --------------------------------------------------------------------------- finish
def finish(t: Training, progress: Progress) -> dict:
    """Test the best weights; on rank 0 write the artifact, metrics.json, the curves and the monitoring
    baseline."""
    if progress.best["state"] is not None:
        t.net.load_state_dict(progress.best["state"])
    answers = best_answers(t, progress)
    test = evaluate(t.net, t.loaders.test, t.opt.criterion, t.opt.speed, t.rt)
    test_loss, test_acc, test_count = test.reduced(t.rt)
    mine = [float(progress.samples) if r == t.rt.rank else 0.0 for r in range(t.rt.world_size)]
    samples = [int(x) for x in distributed.all_reduce_sum(mine, t.rt)]
    # A corrupt training file can land on different ranks in different epochs: count it once.
    seen = set(test.skipped).union(*(set(h.get("skipped", ())) for h in progress.history))
    skipped = distributed.union_across_ranks(seen, t.rt)
    sha = state_sha256(t.net)
    log.info("final_weights_sha256=%s rank=%d", sha, t.rt.rank)
    metrics = {
        "epochs": [{k: v for k, v in h.items() if k != "skipped"} for h in progress.history],
        "best_epoch": progress.best["epoch"],
        "best_val_accuracy": progress.best["val_accuracy"],
        "test_loss": test_loss,
        "test_accuracy": test_acc,
        "test_images": test_count,
        "world_size": t.rt.world_size,
        "samples_per_rank": samples,
        "skipped_images": len(skipped),
        "classes": len(t.loaders.labels),
        "final_weights_sha256": sha,
        "hyperparameters": t.cfg.to_dict(),
    }
    if t.rt.is_main:
        write_outputs(t, metrics, skipped)
        write_baseline(t, answers)
    distributed.close(t.rt)
    return metrics


def write_outputs(t: Training, metrics: dict, skipped: set[str]) -> None:
    """Rank 0's files: the artifact (model.pt, model.ts, model.json, and on a GPU its half-precision
    record), metrics.json, the curves."""
    log.info(
        "test_loss=%.4f test_accuracy=%.4f test_images=%d skipped_images=%d",
        metrics["test_loss"],
        metrics["test_accuracy"],
        metrics["test_images"],
        len(skipped),
    )
    if skipped:
        log.warning("skipped %d unreadable image file(s), e.g. %s", len(skipped), sorted(skipped)[0])
    kept = ("test_accuracy", "test_loss", "best_epoch", "best_val_accuracy", "world_size")
    meta = artifact.ModelMeta(
        arch=t.cfg.arch, labels=t.loaders.labels, preprocessing=t.pre, metrics={k: metrics[k] for k in kept}
    )
    artifact.save(t.job.model_dir, t.net, meta)
    write_cpu_copies(t)
    half_precision.record_for_job(
        t.job.model_dir, data.find_splits(t.job.channels)["valid"], t.rt.device, t.cfg.int8_max_drop
    )
    t.job.output_data_dir.mkdir(parents=True, exist_ok=True)
    (t.job.output_data_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    if metrics["epochs"]:
        monitor.save_curves(metrics["epochs"], t.job.output_data_dir / "training_curves.png")


def write_baseline(t: Training, answers: dict[str, list]) -> None:
    """monitoring/statistics.json and constraints.json in the model folder: what Model Monitor compares
    captured traffic with (byoc.monitor.baseline). A failure costs only the baseline, and says why."""
    try:
        from byoc.monitor import baseline

        _, samples = data.scan_split(data.find_splits(t.job.channels)["valid"])
        folder = baseline.write(
            t.job.model_dir, t.loaders.labels, answers["predicted"], answers["confidence"], [s.path for s in samples]
        )
    except Exception as exc:  # the artifact is complete without it
        log.warning("no monitoring baseline (the model is complete): %s", first_line(exc))
        return
    log.info("monitoring baseline: %s (%d validation answers)", folder, len(answers["predicted"]))


def write_cpu_copies(t: Training) -> None:
    """model.onnx (what a CPU server without torch runs) and, with export-int8, its INT8 copy calibrated
    on the validation images. Either may fail without failing the job: the TorchScript artifact is
    already complete, so a failure costs only the copies, and says why in one line."""
    try:
        from byoc.core import onnx_export

        onnx_export.export(t.job.model_dir)
    except Exception as exc:  # ImportError (no onnx in the image), ArtifactError, the exporter's own
        log.warning("no ONNX copy of the model (the TorchScript artifact is complete): %s", first_line(exc))
        return
    if not t.cfg.export_int8:
        return
    started = time.monotonic()
    try:
        from byoc.core import quantize

        entry = quantize.quantize(
            t.job.model_dir, data.find_splits(t.job.channels)["valid"], max_drop=t.cfg.int8_max_drop
        )
    except Exception as exc:
        log.warning(
            "no INT8 copy of the model (model.onnx and the TorchScript artifact are complete): %s", first_line(exc)
        )
        return
    if entry is not None:  # else quantize logged why not
        log.info("int8: %s (%.0f s)", quantize.summary(t.job.model_dir, entry), time.monotonic() - started)


def state_sha256(model: nn.Module) -> str:
    """Hash of the weights: equal on every rank when DDP kept them in sync."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- the worker process
def configure_logging() -> None:
    rank = os.environ.get("RANK")
    prefix = f"[rank {rank}] " if rank is not None and os.environ.get("WORLD_SIZE", "1") != "1" else ""
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s %(levelname)s {prefix}%(message)s", stream=sys.stdout, force=True
    )


def outcome(exc: BaseException | None) -> tuple[int, str | None]:
    """How a run ended, as (exit code, failure reason): 0 for success, EXIT_STOPPED for an agreed
    stop (a checkpoint is saved: not a failure), 1 with a one-line reason for anything else."""
    if exc is None:
        return 0, None
    if isinstance(exc, Interrupted):
        log.warning("%s", exc)
        return EXIT_STOPPED, None
    if isinstance(exc, ByocError):
        reason = f"{type(exc).__name__}: {exc}"
    else:  # the reason first; the traceback goes to the log
        log.error("training failed", exc_info=exc)
        reason = f"Training failed with {first_line(exc)}. The traceback is in the job's log."
    log.error("%s", reason)
    return 1, reason


def run_reported(job: Job, cfg: TrainConfig) -> tuple[int, str | None]:
    """`run`, its end mapped by `outcome`."""
    try:
        run(job, cfg)
    except Exception as exc:
        return outcome(exc)
    return outcome(None)


def main(argv: list[str] | None = None) -> int:
    """A torchrun worker's entry: its reason for failing goes to the launcher (contract.hand_over)."""
    configure_logging()
    argv = sys.argv[1:] if argv is None else argv
    try:
        job, cfg = contract.load(argv)
    except ByocError as exc:
        code, reason = outcome(exc)
    else:
        code, reason = run_reported(job, cfg)
    if reason is not None:
        contract.hand_over(reason)
    return code


if __name__ == "__main__":
    sys.exit(main())
