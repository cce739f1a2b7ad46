"""The hot loop: one training epoch and one evaluation pass.

Nothing in a step waits for the device: the loss, the correct count and the gradient norm stay
device tensors (`EpochStats`, `StepLog`), read back every `log-every` steps and at the end of the
epoch, and the stop flag is agreed without a blocking collective (`StopAgreement`). On a GPU the
host then runs ahead and queues the next step while the current one computes. (The one sync left
is torch's own: GradScaler's inf check, under fp16 only.)
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from byoc.training.distributed import Runtime, StopAgreement, sum_tensor
from byoc.training.monitor import StepLog
from byoc.training.speed import Speed


@dataclass
class Optimization:
    """Everything a training step needs besides the model and the batch."""

    optimizer: torch.optim.Optimizer
    scheduler: Any  # torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    criterion: nn.Module
    speed: Speed


@dataclass
class EpochStats:
    """One rank's running totals of an epoch, on the device until read (`totals`, `reduced`)."""

    loss_sum: torch.Tensor
    correct: torch.Tensor
    count: int = 0  # known on the host: batch sizes need no device read
    skipped: set[str] = field(default_factory=set)

    @classmethod
    def zeros(cls, device: torch.device) -> EpochStats:
        return cls(
            torch.zeros((), dtype=torch.float64, device=device), torch.zeros((), dtype=torch.int64, device=device)
        )

    @classmethod
    def from_totals(cls, totals: dict, device: torch.device) -> EpochStats:
        """Totals as `totals()` gave them (a checkpoint's entry for one rank)."""
        stats = cls.zeros(device)
        stats.loss_sum += float(totals["loss_sum"])
        stats.correct += int(totals["correct"])
        stats.count = int(totals["count"])
        stats.skipped = set(totals["skipped"])
        return stats

    def add(self, loss: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """A batch's mean loss and predictions (no host sync)."""
        n = targets.numel()
        self.loss_sum += loss.detach().double() * n
        self.correct += (logits.argmax(1) == targets).sum()
        self.count += n

    def merge(self, other: EpochStats) -> None:
        self.loss_sum += other.loss_sum.to(self.loss_sum.device)
        self.correct += other.correct.to(self.correct.device)
        self.count += other.count
        self.skipped |= other.skipped

    def totals(self) -> dict:
        """This rank's totals as plain numbers (reads the device)."""
        return {
            "loss_sum": float(self.loss_sum),
            "correct": float(self.correct),
            "count": float(self.count),
            "skipped": sorted(self.skipped),
        }

    def reduced(self, rt: Runtime) -> tuple[float, float, int]:
        """(mean loss, accuracy, samples) over all ranks: one all-reduce, one device read."""
        t = torch.stack(
            [
                self.loss_sum,
                self.correct.double(),
                torch.tensor(float(self.count), dtype=torch.float64, device=self.loss_sum.device),
            ]
        )
        loss_sum, correct, count = sum_tensor(t, rt).tolist()
        if count == 0:
            return float("nan"), 0.0, 0
        return loss_sum / count, correct / count, int(count)


def to_device(
    images: torch.Tensor, targets: torch.Tensor, speed: Speed, rt: Runtime
) -> tuple[torch.Tensor, torch.Tensor]:
    images = images.to(rt.device, non_blocking=True).contiguous(memory_format=speed.memory_format)
    return images, targets.to(rt.device, non_blocking=True)


def forward(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, criterion: nn.Module, speed: Speed
) -> tuple[torch.Tensor, torch.Tensor]:
    amp = torch.autocast(images.device.type, dtype=speed.dtype) if speed.dtype else nullcontext()
    with amp:
        logits = model(images)
        loss = criterion(logits, targets)
    return logits, loss


def train_step(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, opt: Optimization, rt: Runtime, stats: EpochStats
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step; (loss, gradient norm) as device scalars."""
    images, targets = to_device(images, targets, opt.speed, rt)
    logits, loss = forward(model, images, targets, opt.criterion, opt.speed)
    opt.optimizer.zero_grad(set_to_none=True)
    opt.scaler.scale(loss).backward()
    opt.scaler.unscale_(opt.optimizer)
    grad_norm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
    opt.scaler.step(opt.optimizer)
    opt.scaler.update()
    stats.add(loss, logits, targets)
    return loss, grad_norm


def train_one_epoch(
    model: nn.Module,
    loader: Iterable,
    opt: Optimization,
    rt: Runtime,
    epoch: int,
    stats: EpochStats,
    steps: StepLog,
    stop: StopAgreement,
    step0: int = 0,
    profiler: Any = None,
) -> tuple[int, bool]:
    """Train until the loader is exhausted or the ranks agree to stop: (steps done this epoch, stopped)."""
    model.train()
    step = step0
    for images, targets, skipped in loader:
        stats.skipped.update(skipped)
        step += 1  # a batch whose images were all unreadable is still a step: resume must skip it too
        if images is not None:
            loss, grad_norm = train_step(model, images, targets, opt, rt, stats)
            steps.record(epoch, step, loss, grad_norm)
        if profiler is not None:
            profiler.step()
        if stop.poll():
            steps.flush(epoch)
            return step, True
    steps.flush(epoch)
    return step, stop.settle()


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    criterion: nn.Module,
    speed: Speed,
    rt: Runtime,
    answers: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> EpochStats:
    """This rank's totals over its shard of `loader`; with `answers`, each batch's top-1 classes and
    confidences appended to it, on the device (the monitoring baseline: byoc.training.train)."""
    model.eval()
    stats = EpochStats.zeros(rt.device)
    for images, targets, skipped in loader:
        stats.skipped.update(skipped)
        if images is None:
            continue
        images, targets = to_device(images, targets, speed, rt)
        logits, loss = forward(model, images, targets, criterion, speed)
        stats.add(loss.float(), logits, targets)
        if answers is not None:
            top = logits.float().softmax(1).max(1)
            answers.append((top.indices, top.values))
    return stats
