"""What a run tells its operator: the Debugger-style rule warnings, step and epoch log lines,
TensorBoard scalars, the profiler's trace and the training curves.

The loop hands per-step loss and gradient norm over as device tensors; `StepLog` reads them back
to the host in one transfer every `log-every` steps (nanoGPT's `log_interval`), so the device
queue never waits for a log line, and every step is still checked by the rules.
"""

from __future__ import annotations

import collections
import logging
import math
from pathlib import Path
from typing import Any

import torch

from byoc.training.contract import Job, TrainConfig
from byoc.training.distributed import Runtime

log = logging.getLogger("byoc.training")


class Rules:
    """The Debugger rules users relied on, as log warnings: non-finite loss, vanishing or
    exploding gradients, loss not decreasing over a window of steps.

    `scaled`: fp16 with the GradScaler, which skips every step whose gradients overflow (infinite
    norm) and lowers its scale; those steps are counted in `skipped`, not taken for exploding
    gradients: https://docs.pytorch.org/docs/stable/amp.html#gradient-scaling"""

    def __init__(self, window: int = 50, vanishing: float = 1e-7, exploding: float = 1e3, scaled: bool = False):
        self.window, self.vanishing, self.exploding = window, vanishing, exploding
        self.scaled = scaled
        self.losses: collections.deque[float] = collections.deque(maxlen=2 * window)  # all a comparison needs
        self.count = 0  # steps checked
        self.skipped: collections.Counter[int] = collections.Counter()  # steps the GradScaler skipped, per epoch
        self.fired: set[tuple[str, int]] = set()

    def _warn(self, rule: str, epoch: int, message: str) -> None:
        if (rule, epoch) not in self.fired:  # once per rule and epoch: a signal, not a flood
            self.fired.add((rule, epoch))
            log.warning("rule=%s epoch=%d %s", rule, epoch, message)

    def check(self, epoch: int, step: int, loss: float, grad_norm: float) -> None:
        if not math.isfinite(loss):
            self._warn("LossNotFinite", epoch, f"step={step} loss={loss}: lower lr or use amp=off")
        if self.scaled and math.isfinite(loss) and not math.isfinite(grad_norm):
            self.skipped[epoch] += 1  # the scaler skipped this step and lowered its scale
        elif not math.isfinite(grad_norm) or grad_norm > self.exploding:
            self._warn("ExplodingGradient", epoch, f"step={step} grad_norm={grad_norm:.4g}")
        elif grad_norm < self.vanishing:
            self._warn("VanishingGradient", epoch, f"step={step} grad_norm={grad_norm:.4g}")
        w = self.window
        self.count += 1
        self.losses.append(loss)
        if len(self.losses) == 2 * w and self.count % w == 0:
            window = list(self.losses)
            before = sum(window[:w]) / w
            recent = sum(window[w:]) / w
            if not recent < before:  # also true for NaN
                self._warn(
                    "LossNotDecreasing", epoch, f"mean loss {recent:.4g} over the last {w} steps >= {before:.4g} before"
                )

    def report_skipped(self, epoch: int) -> None:
        """One line for the steps the GradScaler skipped in `epoch`, when there were any."""
        if self.skipped[epoch]:
            log.info(
                "epoch=%d amp_skipped_steps=%d (fp16 gradients overflowed: the GradScaler skipped those steps "
                "and lowered its scale, as it does while finding one)",
                epoch,
                self.skipped[epoch],
            )


class TensorBoard:
    """Scalars for TensorBoard under `directory`; None writes nothing (every rank but global rank 0)."""

    def __init__(self, directory: Path | None):
        self.writer = None
        if directory is None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # the training image has it; a bare torch install (a GPU check) may not
            log.warning("tensorboard is not installed: no TensorBoard events are written")
            return
        self.writer = SummaryWriter(str(directory))

    def scalar(self, tag: str, value: float, step: int) -> None:
        if self.writer is not None:
            self.writer.add_scalar(tag, value, step)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class StepLog:
    """Per-step loss and gradient norm, kept on the device until `flush` reads them in one transfer.

    Flushed every `every` steps and at the end of each epoch: then each step goes through the rules,
    and each step that is a multiple of `every` gets a log line and TensorBoard points at its global
    step (`steps_per_epoch` steps per epoch on every rank, whatever the world size)."""

    def __init__(self, every: int, rules: Rules, board: TensorBoard, rt: Runtime, steps_per_epoch: int):
        self.every, self.rules, self.board, self.rt = every, rules, board, rt
        self.steps_per_epoch = steps_per_epoch
        self._steps: list[int] = []
        self._values: list[torch.Tensor] = []

    def record(self, epoch: int, step: int, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        self._steps.append(step)
        self._values.append(torch.stack([loss.detach().float(), grad_norm.detach().float()]))
        if step % self.every == 0:
            self.flush(epoch)

    def flush(self, epoch: int) -> None:
        if not self._steps:
            return
        values = torch.stack(self._values).tolist()  # the one host read of these steps
        for step, (loss, grad_norm) in zip(self._steps, values, strict=True):
            self.rules.check(epoch, step, loss, grad_norm)
            if step % self.every == 0 and self.rt.is_main:
                log.info("epoch=%d step=%d loss=%.4f grad_norm=%.4g", epoch, step, loss, grad_norm)
                global_step = epoch * self.steps_per_epoch + step
                self.board.scalar("train/step_loss", loss, global_step)
                self.board.scalar("train/grad_norm", grad_norm, global_step)
        self._steps, self._values = [], []


def epoch_line(record: dict, rt: Runtime, board: TensorBoard) -> None:
    """The epoch's log line and TensorBoard scalars (x = epoch), on rank 0."""
    if not rt.is_main:
        return
    log.info(
        "epoch=%d train_loss=%.4f train_accuracy=%.4f val_loss=%.4f val_accuracy=%.4f lr=%.4g epoch_seconds=%.1f",
        record["epoch"],
        record["train_loss"],
        record["train_accuracy"],
        record["val_loss"],
        record["val_accuracy"],
        record["lr"],
        record["seconds"],
    )
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"):
        board.scalar(key.replace("_", "/", 1) if "_" in key else f"train/{key}", record[key], record["epoch"])
    board.flush()


def profiler(cfg: TrainConfig) -> Any:
    """torch.profiler over `profile-steps` steps after one to wait and one to warm up."""
    from torch.profiler import ProfilerActivity, profile, schedule

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    return profile(
        activities=activities,
        schedule=schedule(wait=1, warmup=1, active=cfg.profile_steps, repeat=1),
        record_shapes=False,
    )


def write_profile(prof: Any, job: Job) -> None:
    """The Chrome trace and a top-operators table under output/data/profile."""
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


def save_curves(history: list[dict], path: Path) -> None:
    """Loss and accuracy per epoch, train against validation, as a PNG."""
    try:
        import matplotlib
    except ImportError:  # as for TensorBoard: present in the training image, maybe not elsewhere
        log.warning("matplotlib is not installed: no %s", path.name)
        return

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
