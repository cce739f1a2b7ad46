"""`amp=auto` / `channels-last=auto`: time a few real training steps per candidate setting
on this machine and keep the fastest.

Which is fastest depends on the hardware and the model: on an AVX512-BF16 CPU, bf16
autocast with channels_last made a ResNet-18 step at 112 px twice as fast as fp32,
while at 32 px plain fp32 was three times faster than bf16. So `auto` measures, and drops any
setting whose timing steps give a non-finite loss or gradient.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from byoc.training.contract import Amp, Switch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Speed:
    amp: Amp  # off | bf16 | fp16 (never auto: a choice made)
    channels_last: bool

    def __post_init__(self) -> None:
        object.__setattr__(self, "amp", Amp(self.amp))
        if self.amp is Amp.AUTO:
            raise ValueError("a Speed is a choice made: amp=auto is not one")

    @property
    def dtype(self) -> torch.dtype | None:
        return {Amp.BF16: torch.bfloat16, Amp.FP16: torch.float16}.get(self.amp)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def to_dict(self) -> dict:
        """As a checkpoint stores it (a resumed run computes as the interrupted one did)."""
        return {"amp": self.amp.value, "channels_last": self.channels_last}

    @classmethod
    def from_dict(cls, saved: dict) -> Speed:
        return cls(Amp(saved["amp"]), bool(saved["channels_last"]))


# bf16 on CPU gives random garbage gradients for tiny images. ResNet-18, 10 classes, batch 32, the
# same weights and batch stepped repeatedly (2-core AVX512-BF16 CPU, torch 2.14.1): at 16 px the
# gradient norm was nan/inf/1e10-1e18 instead of 44 in 9 of 60 steps with channels_last and 3 of
# 60 without; 0 of 60 in either layout at 32 px, 0 of 40 at 64 px, and 0 in fp32 at any size.
# Trained with the container tests' settings (16 px, lr 0.001, AdamW, 14 steps), bf16 reached NaN
# in 2 of 6 runs with channels_last and 1 of 2 without. A few timing steps catch a 5-15 % per-step
# failure too rarely (3 steps: 14-39 %), so under `auto` bf16 is not offered below this size;
# `amp=bf16` still forces it.
CPU_BF16_MIN_IMAGE_SIZE = 32

# Tensor cores run bf16 (and TF32) from compute capability 8.0 (Ampere) on; a T4 (7.5) has fp16 tensor
# cores only, and torch.cuda.is_bf16_supported() also counts bf16 emulated without them.
# https://docs.nvidia.com/cuda/ampere-tuning-guide/index.html#improved-tensor-core-operations
AMPERE = (8, 0)


def gpu_amp(capability: tuple[int, int]) -> Amp:
    """Mixed precision for a GPU of `capability`: bf16 from Ampere on, else fp16 (with the GradScaler)."""
    return Amp.BF16 if tuple(capability) >= AMPERE else Amp.FP16


def candidates(
    amp: Amp, channels_last: Switch, device: torch.device, image_size: int, capability: tuple[int, int] | None = None
) -> list[Speed]:
    """Settings to try: fixed choices stay fixed, `auto` ones vary. `capability`: the GPU's compute
    capability (read from `device` when None)."""
    amp, channels_last = Amp(amp), Switch(channels_last)
    amps: list[Amp]
    if amp is not Amp.AUTO:
        amps = [amp]
    elif device.type == "cuda":
        capability = capability or torch.cuda.get_device_capability(device)
        amps = [gpu_amp(capability)]  # always faster than fp32 on GPUs
    else:
        bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported() and image_size >= CPU_BF16_MIN_IMAGE_SIZE
        amps = [Amp.OFF] + ([Amp.BF16] if bf16 else [])
    layouts = [True, False] if channels_last is Switch.AUTO else [channels_last.resolve(False)]
    return [Speed(a, c) for a in amps for c in layouts]


def allow_tf32(capability: tuple[int, int]) -> bool:
    """fp32 matmuls and convolutions on TF32 tensor cores (Ampere on; torch leaves matmuls in full
    fp32 by default): https://docs.pytorch.org/docs/stable/notes/cuda.html#tensorfloat-32-tf32-on-ampere-and-later-devices.
    True when switched on (logged), False on older GPUs, which have no TF32."""
    if tuple(capability) < AMPERE:
        return False
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    log.info("TF32 on for fp32 matmuls and convolutions (compute capability %d.%d)", *capability)
    return True


def _trial(
    model: nn.Module, speed: Speed, batch: torch.Tensor, targets: torch.Tensor, steps: int
) -> tuple[float, str | None]:
    """(fastest step in seconds, None), or (inf, why) at the first step whose loss or gradient
    is not finite: a setting that breaks in a few steps would break the run."""
    model = model.to(memory_format=speed.memory_format)
    x = batch.contiguous(memory_format=speed.memory_format)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=1e-6)
    best = float("inf")
    for i in range(steps + 1):  # the first step warms up (allocations, kernel selection)
        if batch.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast(batch.device.type, dtype=speed.dtype) if speed.dtype else nullcontext():
            loss = nn.functional.cross_entropy(model(x), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if batch.device.type == "cuda":
            torch.cuda.synchronize()
        if i:
            best = min(best, time.perf_counter() - start)
        loss_value = float(loss.detach())
        grad_norm = float(
            torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(p.grad.detach().float()) for p in params if p.grad is not None])
            )
        )
        if not math.isfinite(loss_value):
            return float("inf"), f"loss={loss_value} at step {i + 1}"
        if not math.isfinite(grad_norm):
            return float("inf"), f"grad_norm={grad_norm} at step {i + 1}"
    return best, None


def _fallback(options: list[Speed]) -> Speed:
    """The safest option: fp32 before mixed precision, contiguous before channels_last."""
    return min(options, key=lambda s: (s.amp is not Amp.OFF, s.channels_last))


def fastest(
    model: nn.Module,
    options: list[Speed],
    batch_size: int,
    image_size: int,
    num_classes: int,
    device: torch.device,
    steps: int = 2,
) -> Speed:
    """The fastest of `options` whose timing steps stay finite, for training `model` (a throwaway copy
    is timed; RNG untouched). When none stays finite, the safest option (fp32, contiguous)."""
    if len(options) == 1:
        return options[0]
    timings, dropped = {}, {}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        batch = torch.randn(batch_size, 3, image_size, image_size, device=device)
        targets = torch.randint(0, num_classes, (batch_size,), device=device)
        for speed in options:
            trial = copy.deepcopy(model).train()
            seconds, problem = _trial(trial, speed, batch, targets, steps)
            if problem is None:
                timings[speed] = seconds
            else:
                dropped[speed] = problem
            del trial
    for speed, problem in dropped.items():
        log.warning(
            "speed setting amp=%s channels_last=%s dropped: %s while timing it",
            speed.amp.value,
            speed.channels_last,
            problem,
        )
    if timings:
        choice = min(timings, key=timings.__getitem__)
    else:
        choice = _fallback(options)
        log.warning(
            "no speed setting stayed finite while timing; using amp=%s channels_last=%s",
            choice.amp.value,
            choice.channels_last,
        )
    log.info(
        "speed settings measured (s/step): %s -> amp=%s channels_last=%s",
        ", ".join(f"amp={s.amp.value}/channels_last={s.channels_last}: {t:.3f}" for s, t in timings.items()) or "none",
        choice.amp.value,
        choice.channels_last,
    )
    return choice
