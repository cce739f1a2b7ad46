"""The hot loop (byoc.training.loop): what a step computes, and that it never waits for the device."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from byoc.training import monitor
from byoc.training.contract import Amp
from byoc.training.distributed import Runtime, StopAgreement, StopSignal
from byoc.training.loop import EpochStats, Optimization, evaluate, train_one_epoch
from byoc.training.speed import Speed

CPU = torch.device("cpu")
HOST_READS = ("item", "tolist", "numpy", "cpu", "__float__", "__int__", "__bool__", "__index__")


def _batches(n: int, seed: int = 0) -> list:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 3, 8, 8, generator=g), torch.randint(0, 3, (8,), generator=g), []) for _ in range(n)]


def _setup(log_every: int = 100):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    opt = Optimization(
        optimizer,
        torch.optim.lr_scheduler.ConstantLR(optimizer, 1.0, 1),
        torch.amp.GradScaler("cpu", enabled=False),
        nn.CrossEntropyLoss(),
        Speed(Amp.OFF, False),
    )
    rt = Runtime(CPU)
    steps = monitor.StepLog(log_every, monitor.Rules(), monitor.TensorBoard(None), rt, steps_per_epoch=100)
    return net, opt, rt, steps, StopAgreement(StopSignal(), rt)


def _count_host_reads(monkeypatch) -> list[tuple[str, str]]:
    """Every read of a tensor's value back to the host made from byoc's own code (torch's
    internals do some on CPU tensors that are no sync on a GPU, e.g. the optimiser's step count)."""
    reads: list[tuple[str, str]] = []
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def wrapper(self, *args, _original=original, _name=name, **kwargs):
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if caller.startswith("byoc."):
                reads.append((caller, _name))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, wrapper)
    return reads


@pytest.mark.parametrize("log_every", [100, 4])
def test_steps_never_read_the_device_between_log_points(monkeypatch, log_every):
    """The host reads back once per `log-every` steps and once at the epoch's end, however many steps."""
    counts = {}
    for n in (4, 12):
        net, opt, rt, steps, stop = _setup(log_every)
        reads = _count_host_reads(monkeypatch)
        stats = EpochStats.zeros(CPU)
        done, stopped = train_one_epoch(net, _batches(n), opt, rt, 0, stats, steps, stop)
        monkeypatch.undo()
        assert (done, stopped) == (n, False)
        counts[n] = len(reads)
        assert all(caller == "byoc.training.monitor" for caller, _ in reads), reads
    # one read per flush: at every multiple of log_every, and at the end unless that was one
    flushes = {n: n // log_every + (n % log_every != 0) for n in counts}
    assert counts == flushes


def test_epoch_totals_match_a_step_by_step_count():
    net, opt, rt, steps, stop = _setup()
    batches = _batches(5)
    before = [p.detach().clone() for p in net.parameters()]
    stats = EpochStats.zeros(CPU)
    train_one_epoch(net, batches, opt, rt, 0, stats, steps, stop)
    assert stats.count == 40
    # the same model evaluated afterwards counts what argmax says, per image
    net.eval()
    evaluated = evaluate(net, batches, nn.CrossEntropyLoss(), Speed(Amp.OFF, False), rt)
    with torch.no_grad():
        correct = sum(int((net(x).argmax(1) == y).sum()) for x, y, _ in batches)
    loss, accuracy, count = evaluated.reduced(rt)
    assert (count, accuracy) == (40, correct / 40)
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))  # it trained


def test_step_log_feeds_every_step_to_the_rules_and_logs_at_log_points(caplog):
    rules = monitor.Rules(window=100)
    seen = []
    rules.check = lambda epoch, step, loss, grad_norm: seen.append(step)  # type: ignore[method-assign]
    caplog.set_level("INFO")
    log = monitor.StepLog(3, rules, monitor.TensorBoard(None), Runtime(CPU), steps_per_epoch=10)
    for step in range(1, 8):
        log.record(0, step, torch.tensor(1.0 / step), torch.tensor(2.0))
    assert seen == [1, 2, 3, 4, 5, 6]  # flushed at 3 and 6; 7 waits for the next flush
    log.flush(0)
    assert seen == [1, 2, 3, 4, 5, 6, 7]
    assert [r.getMessage().split()[1] for r in caplog.records if "step=" in r.getMessage()] == ["step=3", "step=6"]


def test_a_stop_requested_mid_epoch_ends_it_after_that_step():
    net, opt, rt, steps, stop = _setup()
    batches = _batches(6)

    def stopping():
        for i, batch in enumerate(batches):
            if i == 2:
                stop.signal.requested = True
            yield batch

    done, stopped = train_one_epoch(net, stopping(), opt, rt, 0, EpochStats.zeros(CPU), steps, stop)
    assert (done, stopped) == (3, True)
