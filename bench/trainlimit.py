"""The training limit: the training loop's steps on synthetic tensors (no data loading) in one
process. Runs inside the training image; prints one JSON document."""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import nullcontext

import torch
from torch import nn


def epoch_seconds(
    model,
    optimizer,
    train: int,
    valid: int,
    batch: int,
    size: int,
    classes: int,
    amp: str = "off",
    channels_last: bool = False,
) -> float:
    """One epoch as byoc.training.train runs it: train steps over `train` images, then evaluation over `valid`,
    with the job's own speed choice (autocast dtype, memory format)."""
    criterion = nn.CrossEntropyLoss()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=fmt)
    y = torch.randint(0, classes, (batch,))
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    autocast = (lambda: torch.autocast("cpu", dtype=dtype)) if dtype else nullcontext
    model.to(memory_format=fmt)
    start = time.perf_counter()
    model.train()
    for first in range(0, train, batch):
        n = min(batch, train - first)
        with autocast():
            loss = criterion(model(x[:n]), y[:n])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf"))
        optimizer.step()
        float(loss.detach())
    model.eval()
    with torch.inference_mode(), autocast():
        for first in range(0, valid, batch):
            model(x[: min(batch, valid - first)]).argmax(1)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    from byoc.training import model as model_factory

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--train", type=int, default=384)
    ap.add_argument("--valid", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument(
        "--amp", default="off", choices=("off", "bf16", "fp16"), help="the container's choice (metrics.json speed)"
    )
    ap.add_argument("--channels-last", default="false", choices=("true", "false"))
    ap.add_argument("--epochs", type=int, default=2, help="epochs to time (the first is warm-up)")
    args = ap.parse_args(argv)
    net = model_factory.create(args.arch, args.classes)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)

    def run() -> float:
        return epoch_seconds(
            net,
            optimizer,
            args.train,
            args.valid,
            args.batch_size,
            args.image_size,
            args.classes,
            args.amp,
            args.channels_last == "true",
        )

    # The first epoch warms the allocator and oneDNN up, as the container's first epoch does.
    seconds = [round(run(), 2) for _ in range(max(2, args.epochs))]
    print(
        json.dumps(
            {
                "epochs_s": seconds,
                "threads": torch.get_num_threads(),
                "amp": args.amp,
                "channels_last": args.channels_last == "true",
                "torch": torch.__version__,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
