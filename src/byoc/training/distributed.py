"""The distributed glue, in one place (torchvision's references/classification/utils.py):
which process this is, the process group, the few collectives the loop needs, and how every
rank agrees to stop at the same step.

One process (no torchrun) is a world of one: every function here then does no communication.
"""

from __future__ import annotations

import logging
import signal
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from byoc.core import gpu_guard
from byoc.core.errors import ConfigError
from byoc.training import contract, speed
from byoc.training.contract import Job

log = logging.getLogger(__name__)

# How long the other ranks wait at the end for rank 0 to write the artifact, the ONNX copy and the
# calibrated INT8 copy. NCCL's default timeout (10 minutes) would abort a finished job whose export
# is slow, so that wait is a barrier on a gloo group created with this timeout (new_group's `timeout`):
# https://docs.pytorch.org/docs/stable/distributed.html#torch.distributed.new_group
EXPORT_WAIT = timedelta(hours=2)


@dataclass
class Runtime:
    """Where this process runs and which rank it is."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    # Host-side agreement (the stop flag, the end-of-job wait) goes over gloo even when the gradients go
    # over NCCL: a CPU collective never waits on the GPU's queue, and its timeout is EXPORT_WAIT.
    # None: the default group (a world of one, the tests).
    control_group: Any = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def cores_per_process(job: Job, rt: Runtime) -> int:
    """This host's cores divided among its training processes."""
    return max(1, job.num_cpus // max(1, rt.world_size // max(1, len(job.hosts))))


def choose_device(facts: gpu_guard.Facts, local_rank: int) -> torch.device:
    """This process's GPU (its local rank), or the CPU on a host without GPUs (never as a fallback:
    `gpu_guard.require` has stopped the job when GPUs are there and torch cannot use them)."""
    if not facts.cuda_available:
        return torch.device("cpu")
    if local_rank >= facts.torch_device_count:
        raise ConfigError(
            f"training process {local_rank} on this host has no GPU of its own: the host has "
            f"{facts.torch_device_count}; set processes-per-host to {facts.torch_device_count} or fewer"
        )
    return torch.device(f"cuda:{local_rank}")


def setup(job: Job, facts: gpu_guard.Facts | None = None) -> Runtime:
    """Device and (under torchrun) process group, once per process. `facts`: the host's GPU facts
    (gathered when None)."""
    env = contract.torchrun_env()
    device = choose_device(gpu_guard.require(facts), env["local_rank"])
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
        speed.allow_tf32(torch.cuda.get_device_capability(device))
    rt = Runtime(device=device, **env)
    if rt.distributed:
        dist.init_process_group("nccl" if cuda else "gloo")
        rt.control_group = control_group()
        if not cuda:
            torch.set_num_threads(cores_per_process(job, rt))
    return rt


def control_group() -> Any:
    """A gloo group of every rank whose collectives wait up to EXPORT_WAIT (a collective call)."""
    return dist.new_group(backend="gloo", timeout=EXPORT_WAIT)


def close(rt: Runtime) -> None:
    """Wait for every rank (rank 0 may still be exporting: up to EXPORT_WAIT, on the control group),
    then leave the process group."""
    if rt.distributed:
        dist.barrier(group=rt.control_group)
        dist.destroy_process_group()


def broadcast_int(value: int, rt: Runtime) -> int:
    """Rank 0's `value` on every rank."""
    if not rt.distributed:
        return value
    t = torch.tensor([value], device=rt.device)
    dist.broadcast(t, src=0)
    return int(t.item())


def sum_tensor(t: torch.Tensor, rt: Runtime) -> torch.Tensor:
    """`t` summed over all ranks (in place, on `t`'s device)."""
    if rt.distributed:
        dist.all_reduce(t)
    return t


def all_reduce_sum(values: list[float], rt: Runtime) -> list[float]:
    """Host numbers summed over all ranks."""
    if not rt.distributed:
        return values
    return sum_tensor(torch.tensor(values, dtype=torch.float64, device=rt.device), rt).tolist()


def union_across_ranks(items: set[str], rt: Runtime) -> set[str]:
    """The union of every rank's set (a collective call: every rank must make it)."""
    if not rt.distributed:
        return items
    return set().union(*gather_objects(sorted(items), rt))


def gather_objects(obj: Any, rt: Runtime) -> list:
    """Every rank's `obj`, in rank order (a collective call: every rank must make it)."""
    if not rt.distributed:
        return [obj]
    gathered: list = [None] * rt.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


class StopSignal:
    """SIGTERM (spot interruption, StopTrainingJob) as a flag the loop polls: the loop saves a
    checkpoint at an agreed step and exits 143 instead of dying mid-write."""

    def __init__(self) -> None:
        self.requested = False

    def install(self) -> StopSignal:
        signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum: int, _frame: Any) -> None:
        if not self.requested:
            log.warning("received signal %d: saving a checkpoint at the next step, then exiting", signum)
        self.requested = True


class StopAgreement:
    """Every rank stops at the same step when any of them was told to (SIGTERM reaches each host,
    not at the same instant), without a blocking collective per step.

    `poll` after each step reads the flag all-reduced one step earlier (by then it has arrived) and
    starts the next non-blocking all-reduce of this rank's flag: all ranks read the result of the
    same collective at the same step, so they agree, one step after the first of them was told.
    `settle` (end of an epoch, where all ranks meet anyway) closes the pending one and agrees once
    more, blocking. In a world of one both read the flag directly.
    """

    def __init__(self, signal: StopSignal, rt: Runtime):
        self.signal, self.rt = signal, rt
        self._pending: tuple[Any, torch.Tensor] | None = None

    def _start(self) -> None:
        flag = torch.tensor([1.0 if self.signal.requested else 0.0])
        work = dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.rt.control_group, async_op=True)
        self._pending = (work, flag)

    def _finish(self) -> bool:
        if self._pending is None:
            return False
        work, flag = self._pending
        self._pending = None
        work.wait()
        return bool(flag[0] > 0)

    def poll(self) -> bool:
        """True when every rank is to stop after the step it just did."""
        return self._agree(wait=False)

    def settle(self) -> bool:
        """The agreement where every rank meets (blocking): True when they all stop here."""
        return self._agree(wait=True)

    def _agree(self, wait: bool) -> bool:
        if not self.rt.distributed:
            return self.signal.requested
        if self._finish():  # the previous step's agreement said stop
            return True
        self._start()
        return self._finish() if wait else False
