"""`amp=auto` / `channels-last=auto`: time a few real training steps per candidate setting
on this machine and keep the fastest.

Which is fastest depends on the hardware and the model: on an AVX512-BF16 CPU, bf16
autocast with channels_last made a ResNet-18 step at 112 px twice as fast as fp32,
while at 32 px plain fp32 was three times faster than bf16. So `auto` measures.
"""

from __future__ import annotations

import copy
import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Speed:
    amp: str  # off | bf16 | fp16
    channels_last: bool

    @property
    def dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.amp)


def candidates(amp: str, channels_last: str, device: torch.device) -> list[Speed]:
    """Settings to try: fixed choices stay fixed, `auto` ones vary."""
    if amp != "auto":
        amps = [amp]
    elif device.type == "cuda":
        amps = ["bf16" if torch.cuda.is_bf16_supported() else "fp16"]  # always faster than fp32 on GPUs
    else:
        amps = ["off"] + (["bf16"] if torch.ops.mkldnn._is_mkldnn_bf16_supported() else [])
    layouts = [True, False] if channels_last == "auto" else [channels_last == "true"]
    return [Speed(a, c) for a in amps for c in layouts]


def _step_seconds(model: nn.Module, speed: Speed, batch: torch.Tensor, targets: torch.Tensor, steps: int) -> float:
    model = model.to(memory_format=torch.channels_last if speed.channels_last else torch.contiguous_format)
    x = batch.contiguous(memory_format=torch.channels_last) if speed.channels_last else batch
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-6)
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
    return best


def fastest(model: nn.Module, options: list[Speed], batch_size: int, image_size: int, num_classes: int,
            device: torch.device, steps: int = 2) -> Speed:
    """The fastest of `options` for training `model` (a throwaway copy is timed; RNG untouched)."""
    if len(options) == 1:
        return options[0]
    timings = {}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        batch = torch.randn(batch_size, 3, image_size, image_size, device=device)
        targets = torch.randint(0, num_classes, (batch_size,), device=device)
        for speed in options:
            trial = copy.deepcopy(model).train()
            timings[speed] = _step_seconds(trial, speed, batch, targets, steps)
            del trial
    choice = min(timings, key=timings.get)
    log.info("speed settings measured (s/step): %s -> amp=%s channels_last=%s",
             ", ".join(f"amp={s.amp}/channels_last={s.channels_last}: {t:.3f}" for s, t in timings.items()),
             choice.amp, choice.channels_last)
    return choice
