"""The training loop: one story for one CPU, one GPU, or many GPUs and hosts under torchrun.

load data -> build model -> (resume) -> for each epoch: train_one_epoch, evaluate,
checkpoint -> best model -> test -> artifact + metrics (global rank 0 only).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Sampler

from byoc.core import artifact
from byoc.training import checkpoint, contract, data, model as model_factory, speed
from byoc.training.contract import Job, TrainConfig
from byoc.core.errors import ByocError, ConfigError

log = logging.getLogger("byoc.training.train")


class Interrupted(Exception):
    """SIGTERM arrived (spot interruption, StopTrainingJob): a checkpoint was saved."""


# --------------------------------------------------------------------------- runtime
@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    speed: speed.Speed = speed.Speed("off", False)  # set once by choose_speed
    stop_requested: bool = False

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return self.speed.dtype

    @property
    def channels_last(self) -> bool:
        return self.speed.channels_last

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def cores_per_process(job: Job, rt: Runtime) -> int:
    """This host's cores divided among its training processes."""
    return max(1, job.num_cpus // max(1, rt.world_size // max(1, len(job.hosts))))


def setup_runtime(job: Job, cfg: TrainConfig) -> Runtime:
    """Device, process group (under torchrun), AMP and memory-format choices, once."""
    env = contract.torchrun_env()
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{env['local_rank']}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    rt = Runtime(device=device, **env)
    if rt.distributed:
        dist.init_process_group("nccl" if cuda else "gloo")
        if not cuda:
            torch.set_num_threads(cores_per_process(job, rt))
    return rt


def choose_speed(net: nn.Module, cfg: TrainConfig, num_classes: int, rt: Runtime, saved: dict | None) -> None:
    """Set AMP and memory format: as saved in the checkpoint being resumed (a resumed run must
    compute exactly as the interrupted one did), else the fastest measured on rank 0, for all ranks."""
    if saved is not None:
        choice = speed.Speed(saved["amp"], saved["channels_last"])
    else:
        options = speed.candidates(cfg.amp, cfg.channels_last, rt.device, cfg.image_size)
        index = options.index(speed.fastest(net, options, cfg.batch_size, cfg.image_size, num_classes, rt.device)) \
            if rt.is_main else 0
        if rt.distributed:
            t = torch.tensor([index], device=rt.device)
            dist.broadcast(t, src=0)
            index = int(t.item())
        choice = options[index]
    rt.speed = choice


def all_reduce_sum(values: list[float], rt: Runtime) -> list[float]:
    if not rt.distributed:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=rt.device)
    dist.all_reduce(t)
    return t.tolist()


def union_across_ranks(items: set[str], rt: Runtime) -> set[str]:
    """The union of every rank's set (a collective call: every rank must make it)."""
    if not rt.distributed:
        return items
    gathered: list[list[str] | None] = [None] * rt.world_size
    dist.all_gather_object(gathered, sorted(items))
    return set().union(*gathered)


def gather_objects(obj, rt: Runtime) -> list:
    """Every rank's `obj`, in rank order (a collective call: every rank must make it)."""
    if not rt.distributed:
        return [obj]
    gathered: list = [None] * rt.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def state_sha256(model: nn.Module) -> str:
    """Hash of the weights: equal on every rank when DDP kept them in sync."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- data
class ShardSampler(Sampler):
    """This rank's share of an epoch, reshuffled per epoch (seed + epoch).

    Training (`shuffle=True`) pads the order to a multiple of the world size, as
    DistributedSampler does, so that every rank runs the same number of steps (DDP
    requires it), and yields (epoch, index) so the dataset can seed augmentation per
    sample: the same image gets the same crop in an interrupted-and-resumed run as in a
    straight one, whichever worker loads it. Evaluation does not pad: every image
    counts exactly once.
    """

    def __init__(self, size: int, rank: int, world: int, seed: int, shuffle: bool):
        self.size, self.rank, self.world, self.seed, self.shuffle = size, rank, world, seed, shuffle
        self.epoch = 0
        self.skip = 0  # samples of this epoch already trained before an interruption

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def indices(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.size))[self.rank::self.world]
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.size, generator=g).tolist()
        padded = -(-self.size // self.world) * self.world
        order += order[: padded - self.size]
        return order[self.rank::self.world]

    def __iter__(self):
        for i in self.indices()[self.skip:]:
            yield (self.epoch, i) if self.shuffle else i

    def __len__(self) -> int:
        return max(0, len(self.indices()) - self.skip)


class SeededDataset(torch.utils.data.Dataset):
    """Wraps a split so that random augmentation is a function of (seed, epoch, index)."""

    def __init__(self, inner: data.ImageFolderSplit, seed: int):
        self.inner, self.seed = inner, seed

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, key):
        epoch, i = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((self.seed * 1_000_003 + epoch) * 10_000_019 + i)
            return self.inner[i]


def num_workers(cfg: TrainConfig, job: Job, rt: Runtime) -> int:
    """Data loader processes: `num-workers`, else cores per process - 1 (1 to 8) on a GPU, and on
    the CPU one per 4 cores (none below 4). The CPU model's threads use every core, and a loader
    process on a core they need stalls every parallel op, not only its share: ResNet-18 at 224 px
    on 2 cores ran an epoch in 24.1-25.2 s with 1 worker and 21.2-21.9 s with none (synthetic
    tensors, no loading at all: 21.0 s), while decoding and augmenting took 1.2 ms an image."""
    if cfg.num_workers >= 0:
        return cfg.num_workers
    cores = cores_per_process(job, rt)
    if rt.device.type == "cpu":
        return min(8, cores // 4)
    return max(1, min(8, cores - 1))


def make_loader(dataset, sampler: ShardSampler, cfg: TrainConfig, workers: int, rt: Runtime) -> DataLoader:
    pin = cfg.pin_memory == "true" or (cfg.pin_memory == "auto" and rt.device.type == "cuda")
    # A last training batch of one image breaks BatchNorm; every rank has the same share, so
    # dropping it keeps the ranks in step.
    drop_last = sampler.shuffle and len(sampler.indices()) % cfg.batch_size == 1 and len(sampler.indices()) > 1
    return DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=data.collate,
        pin_memory=pin,
        persistent_workers=cfg.persistent_workers and workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        drop_last=drop_last,
    )


# --------------------------------------------------------------------------- monitoring
class Rules:
    """The Debugger rules users relied on, as log warnings: non-finite loss, vanishing or
    exploding gradients, loss not decreasing over a window of steps."""

    def __init__(self, window: int = 50, vanishing: float = 1e-7, exploding: float = 1e3):
        self.window, self.vanishing, self.exploding = window, vanishing, exploding
        self.losses: list[float] = []
        self.fired: set[tuple[str, int]] = set()

    def _warn(self, rule: str, epoch: int, message: str) -> None:
        if (rule, epoch) not in self.fired:  # once per rule and epoch: a signal, not a flood
            self.fired.add((rule, epoch))
            log.warning("rule=%s epoch=%d %s", rule, epoch, message)

    def check(self, epoch: int, step: int, loss: float, grad_norm: float) -> None:
        if not math.isfinite(loss):
            self._warn("LossNotFinite", epoch, f"step={step} loss={loss}: lower lr or use amp=off")
        if not math.isfinite(grad_norm) or grad_norm > self.exploding:
            self._warn("ExplodingGradient", epoch, f"step={step} grad_norm={grad_norm:.4g}")
        elif grad_norm < self.vanishing:
            self._warn("VanishingGradient", epoch, f"step={step} grad_norm={grad_norm:.4g}")
        self.losses.append(loss)
        w = self.window
        if len(self.losses) >= 2 * w and len(self.losses) % w == 0:
            before = sum(self.losses[-2 * w:-w]) / w
            recent = sum(self.losses[-w:]) / w
            if not recent < before:  # also true for NaN
                self._warn("LossNotDecreasing", epoch, f"mean loss {recent:.4g} over the last {w} steps >= {before:.4g} before")


@dataclass
class EpochStats:
    loss_sum: float = 0.0
    correct: float = 0.0
    count: float = 0.0
    skipped: set[str] = field(default_factory=set)

    def add(self, loss_sum: float, correct: float, count: int, skipped: list[str]) -> None:
        self.loss_sum += loss_sum
        self.correct += correct
        self.count += count
        self.skipped.update(skipped)

    def reduced(self, rt: Runtime) -> tuple[float, float, int]:
        """(mean loss, accuracy, samples) over all ranks."""
        loss_sum, correct, count = all_reduce_sum([self.loss_sum, self.correct, self.count], rt)
        if count == 0:
            return float("nan"), 0.0, 0
        return loss_sum / count, correct / count, int(count)


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
            log.warning("checkpoint written by %d process(es), resumed by %d: rank 0 carries the interrupted "
                        "epoch's totals so far and the samples of earlier epochs", len(entries), rt.world_size)
        mine = entries if rt.is_main else []
    stats = EpochStats()
    for e in mine:
        stats.add(e["loss_sum"], e["correct"], e["count"], e["skipped"])
    return stats, sum(e["samples"] for e in mine)


# --------------------------------------------------------------------------- loop
def _forward(model, images, targets, criterion, rt: Runtime):
    amp = torch.autocast(rt.device.type, dtype=rt.amp_dtype) if rt.amp_dtype else nullcontext()
    with amp:
        logits = model(images)
        loss = criterion(logits, targets)
    return logits, loss


def _to_device(images, targets, rt: Runtime):
    images = images.to(rt.device, non_blocking=True)
    if rt.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, targets.to(rt.device, non_blocking=True)


def train_one_epoch(model, loader, optimizer, scaler, criterion, rt: Runtime, epoch: int, cfg: TrainConfig,
                    rules: Rules, stats: EpochStats, step0: int = 0, on_step=None, profiler=None,
                    writer=None, global_step: int = 0) -> int:
    """Train until the loader is exhausted or a stop is requested; returns the steps done this epoch."""
    model.train()
    step = step0
    for images, targets, skipped in loader:
        if images is None:  # every image in the batch was unreadable: nothing to learn from
            stats.add(0.0, 0.0, 0, skipped)
            step += 1  # still a batch of the epoch: resume must skip it too
            continue
        images, targets = _to_device(images, targets, rt)
        logits, loss = _forward(model, images, targets, criterion, rt)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf")))
        scaler.step(optimizer)
        scaler.update()
        step += 1
        n = targets.numel()
        loss_value = float(loss.detach())
        stats.add(loss_value * n, float((logits.argmax(1) == targets).sum()), n, skipped)
        rules.check(epoch, step, loss_value, grad_norm)
        if profiler is not None:
            profiler.step()
        if rt.is_main and step % cfg.log_every == 0:
            log.info("epoch=%d step=%d loss=%.4f grad_norm=%.4g", epoch, step, loss_value, grad_norm)
            if writer is not None:
                writer.add_scalar("train/step_loss", loss_value, global_step + step)
                writer.add_scalar("train/grad_norm", grad_norm, global_step + step)
        if on_step is not None and on_step(step):
            break
    return step


@torch.inference_mode()
def evaluate(model, loader, criterion, rt: Runtime) -> EpochStats:
    model.eval()
    stats = EpochStats()
    for images, targets, skipped in loader:
        if images is None:
            stats.add(0.0, 0.0, 0, skipped)
            continue
        images, targets = _to_device(images, targets, rt)
        logits, loss = _forward(model, images, targets, criterion, rt)
        n = targets.numel()
        stats.add(float(loss.float()) * n, float((logits.argmax(1) == targets).sum()), n, skipped)
    return stats


def _install_sigterm(rt: Runtime) -> None:
    def handler(signum, frame):
        if not rt.stop_requested:
            log.warning("received signal %d: saving a checkpoint at the next step, then exiting", signum)
        rt.stop_requested = True

    signal.signal(signal.SIGTERM, handler)


def _stop_agreed(rt: Runtime) -> bool:
    """All ranks stop at the same step when any of them was told to (SIGTERM reaches each host)."""
    if not rt.distributed:
        return rt.stop_requested
    flag = torch.tensor([1.0 if rt.stop_requested else 0.0], device=rt.device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def _save_plot(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax1.plot(epochs, [h["val_loss"] for h in history], "o-", label="validation")
    ax1.set(xlabel="epoch", ylabel="loss", title="Loss")
    ax1.legend()
    ax2.plot(epochs, [h["train_accuracy"] for h in history], "o-", label="train")
    ax2.plot(epochs, [h["val_accuracy"] for h in history], "o-", label="validation")
    ax2.set(xlabel="epoch", ylabel="accuracy", title="Accuracy", ylim=(0, 1))
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(job: Job, cfg: TrainConfig) -> dict:
    """Train, evaluate and (on global rank 0) write the artifact and metrics. Returns the metrics."""
    rt = setup_runtime(job, cfg)
    _install_sigterm(rt)
    torch.manual_seed(cfg.seed)
    pre = artifact.Preprocessing.for_size(cfg.image_size)
    splits = data.load(job.channels, pre, augment=cfg.augment)
    workers = num_workers(cfg, job, rt)
    if rt.device.type == "cpu" and cfg.num_workers < 0 and workers:
        torch.set_num_threads(max(1, cores_per_process(job, rt) - workers))  # the loader's cores stay free
    if rt.is_main:
        log.info("data: %d classes, train=%d valid=%d test=%d images; world_size=%d device=%s workers=%d",
                 len(splits.labels), len(splits.train), len(splits.valid), len(splits.test), rt.world_size,
                 rt.device, workers)

    train_sampler = ShardSampler(len(splits.train), rt.rank, rt.world_size, cfg.seed, shuffle=True)
    train_loader = make_loader(SeededDataset(splits.train, cfg.seed), train_sampler, cfg, workers, rt)
    valid_loader = make_loader(splits.valid, ShardSampler(len(splits.valid), rt.rank, rt.world_size, 0, False), cfg, workers, rt)

    weights_file = _weights_file(job)
    net = model_factory.create(cfg.arch, len(splits.labels), pretrained=cfg.pretrained,
                               freeze_backbone=cfg.freeze_backbone, weights_file=weights_file).to(rt.device)
    resumed = checkpoint.load_newest(job.checkpoint_dir)
    choose_speed(net, cfg, len(splits.labels), rt, resumed[0].get("speed") if resumed else None)
    if rt.is_main:
        log.info("amp=%s channels_last=%s", rt.speed.amp, rt.speed.channels_last)
    if rt.channels_last:
        net = net.to(memory_format=torch.channels_last)
    params = [p for p in net.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay, nesterov=True)
    elif cfg.optimizer == "adam":
        optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.amp_dtype == torch.float16)
    criterion = nn.CrossEntropyLoss()

    # ---- resume
    start_epoch, start_step, history = 0, 0, []
    best = {"epoch": -1, "val_accuracy": -1.0, "state": None}
    partial = EpochStats()
    samples_seen = [0] * rt.world_size  # per rank, over finished epochs; summed across ranks at the end
    if resumed is not None:
        state, path = resumed
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        checkpoint.set_rng_state(state["rng"])
        start_epoch, start_step, history, best = state["epoch"], state["step"], state["history"], state["best"]
        partial, samples_seen[rt.rank] = resumed_progress(state, rt)
        log.info("resumed_from_epoch=%d step=%d checkpoint=%s", start_epoch, start_step, path.name)

    train_model: nn.Module = net
    if rt.distributed:
        train_model = nn.parallel.DistributedDataParallel(net, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
    if cfg.compile:
        import shutil

        if shutil.which(os.environ.get("CXX", "g++")) or shutil.which("gcc"):
            train_model = torch.compile(train_model)
        elif rt.is_main:  # inductor compiles C++/Triton glue at run time
            log.warning("compile=true ignored: torch.compile needs a C/C++ compiler, and this image has none "
                        "(a slim runtime image). Training continues without compilation.")

    writer = None
    if rt.is_main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(job.tensorboard_dir))
    rules = Rules()
    skipped_all: set[str] = set()

    def save_checkpoint(epoch: int, step: int, stats: EpochStats) -> None:
        """Every rank calls this at the same point (an agreed stop, or the end of an epoch): each
        rank's share of the epoch so far goes into the checkpoint, which rank 0 writes."""
        ranks = gather_objects({"loss_sum": stats.loss_sum, "correct": stats.correct, "count": stats.count,
                                "skipped": sorted(stats.skipped), "samples": samples_seen[rt.rank]}, rt)
        if not rt.is_main:
            return
        state = {
            "model": net.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "rng": checkpoint.rng_state(), "epoch": epoch, "step": step,
            "history": history, "best": best, "config": cfg.to_dict(),
            "speed": {"amp": rt.speed.amp, "channels_last": rt.speed.channels_last},
            "ranks": ranks,
        }
        path = checkpoint.save(job.checkpoint_dir, state, epoch, step)
        log.info("checkpoint saved: %s", path)

    epochs_without_improvement = 0
    epoch = start_epoch
    for epoch in range(start_epoch, cfg.epochs):
        skip = start_step * cfg.batch_size if epoch == start_epoch else 0
        train_sampler.set_epoch(epoch, skip)
        stats = partial if epoch == start_epoch else EpochStats()
        t0 = time.monotonic()
        profiler = _profiler(job, cfg) if rt.is_main and cfg.profile_steps and epoch == start_epoch else None
        with profiler if profiler is not None else nullcontext():
            steps = train_one_epoch(
                train_model, train_loader, optimizer, scaler, criterion, rt, epoch, cfg, rules, stats,
                step0=start_step if epoch == start_epoch else 0, on_step=lambda s: _stop_agreed(rt),
                profiler=profiler, writer=writer, global_step=epoch * len(splits.train) // max(1, cfg.batch_size),
            )
        if profiler is not None:
            _write_profile(profiler, job)
        if _stop_agreed(rt):
            save_checkpoint(epoch, steps, stats)
            raise Interrupted(f"stopped by SIGTERM at epoch {epoch} step {steps}; checkpoint saved")
        samples_seen[rt.rank] += int(stats.count)
        train_loss, train_acc, _ = stats.reduced(rt)
        skipped_all |= stats.skipped
        val = evaluate(train_model, valid_loader, criterion, rt)
        skipped_all |= val.skipped
        val_loss, val_acc, _ = val.reduced(rt)
        scheduler.step()
        seconds = time.monotonic() - t0
        history.append({"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_acc, "val_loss": val_loss,
                        "val_accuracy": val_acc, "seconds": round(seconds, 2), "lr": optimizer.param_groups[0]["lr"]})
        if rt.is_main:
            log.info("epoch=%d train_loss=%.4f train_accuracy=%.4f val_loss=%.4f val_accuracy=%.4f epoch_seconds=%.1f",
                     epoch, train_loss, train_acc, val_loss, val_acc, seconds)
            if writer is not None:
                for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
                    writer.add_scalar(key.replace("_", "/", 1), history[-1][key], epoch)
                writer.flush()
        if val_acc > best["val_accuracy"]:
            best = {"epoch": epoch, "val_accuracy": val_acc, "state": copy.deepcopy({k: v.cpu() for k, v in net.state_dict().items()})}
            epochs_without_improvement = 0
        else:
            epochs_without_improvement += 1
        start_step = 0
        stop_early = cfg.early_stopping_patience and epochs_without_improvement >= cfg.early_stopping_patience
        if (epoch + 1) % cfg.checkpoint_every == 0 or epoch + 1 == cfg.epochs or stop_early:
            save_checkpoint(epoch + 1, 0, EpochStats())
        if stop_early:
            if rt.is_main:
                log.info("early stopping: val_accuracy has not improved for %d epochs (best %.4f at epoch %d)",
                         epochs_without_improvement, best["val_accuracy"], best["epoch"])
            break

    # ---- best model -> test
    if best["state"] is not None:
        net.load_state_dict(best["state"])
    test_loader = make_loader(splits.test, ShardSampler(len(splits.test), rt.rank, rt.world_size, 0, False), cfg, workers, rt)
    test = evaluate(net, test_loader, criterion, rt)
    skipped_all |= test.skipped
    test_loss, test_acc, test_count = test.reduced(rt)
    samples_seen = [int(x) for x in all_reduce_sum([float(x) for x in samples_seen], rt)]
    # A corrupt training file can land on different ranks in different epochs: count it once.
    skipped_all = union_across_ranks(skipped_all, rt)
    skipped_count = len(skipped_all)
    sha = state_sha256(net)
    log.info("final_weights_sha256=%s rank=%d", sha, rt.rank)

    metrics = {
        "epochs": history,
        "best_epoch": best["epoch"],
        "best_val_accuracy": best["val_accuracy"],
        "test_loss": test_loss,
        "test_accuracy": test_acc,
        "test_images": test_count,
        "world_size": rt.world_size,
        "samples_per_rank": samples_seen,
        "skipped_images": skipped_count,
        "classes": len(splits.labels),
        "final_weights_sha256": sha,
        "hyperparameters": cfg.to_dict(),
    }
    if rt.is_main:
        log.info("test_loss=%.4f test_accuracy=%.4f test_images=%d skipped_images=%d",
                 test_loss, test_acc, test_count, skipped_count)
        if skipped_all:
            log.warning("skipped %d unreadable image file(s), e.g. %s", len(skipped_all), sorted(skipped_all)[0])
        meta = artifact.ModelMeta(arch=cfg.arch, labels=splits.labels, preprocessing=pre,
                                  metrics={k: metrics[k] for k in ("test_accuracy", "test_loss", "best_epoch", "best_val_accuracy", "world_size")})
        artifact.save(job.model_dir, net, meta)
        job.output_data_dir.mkdir(parents=True, exist_ok=True)
        (job.output_data_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        if history:
            _save_plot(history, job.output_data_dir / "training_curves.png")
        if writer is not None:
            writer.add_scalar("test/accuracy", test_acc, epoch)
            writer.close()
    if rt.distributed:
        dist.barrier()
        dist.destroy_process_group()
    return metrics


def _weights_file(job: Job) -> Path | None:
    folder = job.channels.get("weights")
    if folder is None:
        return None
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix in (".pth", ".pt"))
    if not files:
        raise ConfigError(f"the 'weights' channel {folder} holds no .pth or .pt file")
    return files[0]


def _profiler(job: Job, cfg: TrainConfig):
    from torch.profiler import ProfilerActivity, profile, schedule

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    return profile(activities=activities, schedule=schedule(wait=1, warmup=1, active=cfg.profile_steps, repeat=1),
                   record_shapes=False)


def _write_profile(prof, job: Job) -> None:
    out = job.output_data_dir / "profile"
    out.mkdir(parents=True, exist_ok=True)
    try:
        prof.export_chrome_trace(str(out / "trace.json"))
        sort = "cuda_time_total" if torch.cuda.is_available() else "cpu_time_total"
        table = prof.key_averages().table(sort_by=sort, row_limit=20)
    except (RuntimeError, AssertionError) as exc:  # too few steps ran to record anything
        log.warning("profiler recorded nothing (%s): use more training steps than profile-steps + 2", exc)
        return
    (out / "top_operators.txt").write_text(table)
    log.info("profile written to %s (trace.json for chrome://tracing or Perfetto)\n%s", out, table)


def configure_logging() -> None:
    rank = os.environ.get("RANK")
    prefix = f"[rank {rank}] " if rank is not None and os.environ.get("WORLD_SIZE", "1") != "1" else ""
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s %(levelname)s {prefix}%(message)s",
                        stream=sys.stdout, force=True)


def main(argv: list[str] | None = None) -> int:
    """Worker entry (one process, or one of torchrun's). Errors go to the failure file."""
    configure_logging()
    argv = sys.argv[1:] if argv is None else argv
    job = None
    try:
        job, cfg = contract.load(argv)
        run(job, cfg)
        return 0
    except Interrupted as exc:
        log.warning("%s", exc)
        return 143
    except ByocError as exc:
        message = f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # report the reason first; the traceback goes to the log
        log.exception("training failed")
        message = f"Training failed with {type(exc).__name__}: {exc}. The traceback is in the job's log."
    log.error("%s", message)
    if job is not None:
        contract.write_failure(job, message)
    else:
        from sagemaker_training import environment

        contract.write_failure(Path(environment.output_dir), message)
    return 1


if __name__ == "__main__":
    sys.exit(main())
