"""The distributed glue (byoc.training.distributed) across two real gloo processes."""

from __future__ import annotations

import tempfile

import torch
import torch.multiprocessing as mp

from byoc.training import distributed
from byoc.training.distributed import Runtime, StopAgreement, StopSignal


def _agreement_worker(rank: int, store: str, tell_at: dict[int, int], out) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        rt = Runtime(torch.device("cpu"), rank=rank, world_size=2)
        stop = StopAgreement(StopSignal(), rt)
        stopped_after = None
        for step in range(1, 11):
            if tell_at.get(rank) == step:
                stop.signal.requested = True
            if stop.poll():
                stopped_after = step
                break
        if stopped_after is None:
            stopped_after = ("settled", stop.settle())
        out.put((rank, stopped_after))
    finally:
        dist.destroy_process_group()


def _run(tell_at: dict[int, int]) -> dict:
    # A file rendezvous: no port to pick (and race for) before the processes start.
    with tempfile.TemporaryDirectory() as tmp:
        out = mp.get_context("spawn").SimpleQueue()
        mp.start_processes(_agreement_worker, args=(f"{tmp}/store", tell_at, out), nprocs=2, start_method="spawn")
        return dict(out.get() for _ in range(2))


def test_one_rank_told_to_stop_stops_both_at_the_same_step():
    assert _run({1: 4}) == {0: 5, 1: 5}  # read one step after the signal, on every rank


def test_nobody_told_settles_to_no_stop_and_a_late_signal_is_seen_at_the_epoch_end():
    assert _run({}) == {0: ("settled", False), 1: ("settled", False)}
    assert _run({0: 10}) == {0: ("settled", True), 1: ("settled", True)}


def test_a_world_of_one_needs_no_process_group():
    rt = Runtime(torch.device("cpu"))
    stop = StopAgreement(StopSignal(), rt)
    assert not stop.poll() and not stop.settle()
    stop.signal.requested = True
    assert stop.poll() and stop.settle()
    assert distributed.all_reduce_sum([1.0, 2.0], rt) == [1.0, 2.0]
    assert distributed.broadcast_int(7, rt) == 7
