"""The training limit: the training loop's steps on synthetic tensors (no data loading) in one
process. Runs inside the training image; prints one JSON document."""

from __future__ import annotations

import argparse
import json
import sys
import time

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
    """One epoch as byoc.training.train runs it, through its own loop (byoc.training.loop): train steps
    over `train` images, then evaluation over `valid`, with the job's speed choice (autocast dtype,
    memory format). Only the data differs: synthetic tensors, already decoded and augmented."""
    from byoc.training import monitor
    from byoc.training.distributed import Runtime, StopAgreement, StopSignal
    from byoc.training.loop import EpochStats, Optimization, evaluate, train_one_epoch
    from byoc.training.speed import Speed

    speed = Speed(amp, channels_last)
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, classes, (batch,))
    train_batches = [(x[: min(batch, train - i)], y[: min(batch, train - i)], []) for i in range(0, train, batch)]
    valid_batches = [(x[: min(batch, valid - i)], y[: min(batch, valid - i)], []) for i in range(0, valid, batch)]
    rt = Runtime(torch.device("cpu"))
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    opt = Optimization(optimizer, None, scaler, nn.CrossEntropyLoss(), speed)
    steps = monitor.StepLog(50, monitor.Rules(), monitor.TensorBoard(None), rt, len(train_batches))
    model.to(memory_format=speed.memory_format)
    start = time.perf_counter()
    stats = EpochStats.zeros(rt.device)
    train_one_epoch(model, train_batches, opt, rt, 0, stats, steps, StopAgreement(StopSignal(), rt))
    stats.reduced(rt)
    evaluate(model, valid_batches, opt.criterion, speed, rt).reduced(rt)
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
