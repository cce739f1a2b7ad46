"""The CUDA paths of training, reached on the CPU: the GPU's facts are passed in or torch.cuda is
patched (this machine has no GPU), and the end-of-job wait runs across two real gloo processes."""

from __future__ import annotations

import logging
import tempfile
import time
from datetime import timedelta

import pytest
import torch
import torch.multiprocessing as mp

from byoc.core.errors import ConfigError
from byoc.core.gpu_guard import Facts
from byoc.training import checkpoint, distributed, launch, monitor, speed
from byoc.training.contract import Amp, Job, Switch, TrainConfig
from byoc.training.distributed import Runtime

CUDA = torch.device("cuda:0")


def _gpu(monkeypatch, capability: tuple[int, int]) -> None:
    """torch.cuda as on a GPU of `capability` whose bf16 torch reports supported (emulated or not)."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)


@pytest.mark.parametrize(
    ("capability", "amp"), [((7, 5), Amp.FP16), ((7, 0), Amp.FP16), ((8, 0), Amp.BF16), ((9, 0), Amp.BF16)]
)
def test_amp_auto_on_a_gpu_is_bf16_only_with_ampere_tensor_cores(monkeypatch, capability, amp):
    """A T4 (7.5) reports bf16 supported (emulated), but its tensor cores run fp16 only."""
    _gpu(monkeypatch, capability)
    assert [s.amp for s in speed.candidates(Amp.AUTO, Switch.OFF, CUDA, 224)] == [amp]
    assert [s.amp for s in speed.candidates(Amp.AUTO, Switch.OFF, CUDA, 224, capability=capability)] == [amp]


def _cuda_host(monkeypatch, capability: tuple[int, int]) -> None:
    """torch.cuda patched as on a one-GPU host whose GPU torch can use."""
    _gpu(monkeypatch, capability)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: [])
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)


def test_tf32_is_on_for_ampere_and_logged(monkeypatch, tmp_path, caplog):
    _cuda_host(monkeypatch, (8, 6))
    with caplog.at_level(logging.INFO):
        rt = distributed.setup(Job.one_host(tmp_path, {}, num_cpus=1, num_gpus=1))
    assert rt.device == CUDA
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    assert [r for r in caplog.records if "TF32 on" in r.getMessage()]


def test_tf32_stays_off_before_ampere(monkeypatch, tmp_path):
    _cuda_host(monkeypatch, (7, 5))
    distributed.setup(Job.one_host(tmp_path, {}, num_cpus=1, num_gpus=1))
    assert not torch.backends.cuda.matmul.allow_tf32


def test_a_process_beyond_the_hosts_gpus_is_refused_in_one_line(monkeypatch, tmp_path):
    """torchrun's local rank 1 on a one-GPU host would meet "invalid device ordinal" at its first op."""
    _cuda_host(monkeypatch, (7, 5))
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(ConfigError, match="set processes-per-host to 1 or fewer"):
        distributed.setup(Job.one_host(tmp_path, {}, num_cpus=1, num_gpus=1))


def test_processes_per_host_above_the_gpu_count_is_refused_before_torchrun(tmp_path):
    job = Job.one_host(tmp_path, {}, num_cpus=8, num_gpus=2)
    with pytest.raises(ConfigError, match="processes-per-host 3 is more than this host's 2 GPU"):
        launch.check_processes(job, TrainConfig(processes_per_host=3), Facts(smi_gpus=2, torch_device_count=2))
    launch.check_processes(job, TrainConfig(processes_per_host=2), Facts(smi_gpus=2, torch_device_count=2))
    cpu_host = Job.one_host(tmp_path, {}, num_cpus=8)
    launch.check_processes(cpu_host, TrainConfig(processes_per_host=4), Facts())  # gloo on the CPU


def test_resuming_on_a_host_with_fewer_gpus_restores_the_ones_it_has(monkeypatch):
    restored: dict[int, torch.Tensor] = {}

    def set_rng_state(state, device=0):
        if int(device) >= 1:
            raise RuntimeError("CUDA error: invalid device ordinal")
        restored[int(device)] = state

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", set_rng_state)
    monkeypatch.setattr(torch.cuda.random, "set_rng_state", set_rng_state)  # what set_rng_state_all calls
    saved = {**checkpoint.rng_state(), "cuda": [torch.tensor([1], dtype=torch.uint8), torch.tensor([2])]}
    checkpoint.set_rng_state(saved)
    assert list(restored) == [0] and restored[0].tolist() == [1]


def test_steps_the_grad_scaler_skips_are_counted_not_exploding(caplog):
    rules = monitor.Rules(scaled=True)
    with caplog.at_level(logging.INFO, logger="byoc.training"):
        rules.check(0, 1, 2.3, float("inf"))
        rules.check(0, 2, 2.3, float("nan"))
        rules.check(0, 3, 2.2, 5.0)
        rules.report_skipped(0)
    assert rules.skipped[0] == 2
    assert not [r for r in caplog.records if "ExplodingGradient" in r.getMessage()]
    assert [r for r in caplog.records if "amp_skipped_steps=2" in r.getMessage()]


def test_without_the_scaler_an_infinite_gradient_is_still_exploding(caplog):
    rules = monitor.Rules()
    rules.check(0, 1, 2.3, float("inf"))
    assert [r for r in caplog.records if "ExplodingGradient" in r.getMessage()]


def _end_of_job_worker(rank: int, store: str, export_seconds: float, out) -> None:
    import torch.distributed as dist

    # A process group whose own timeout is shorter than rank 0's export, as NCCL's 10 minutes can be.
    short = timedelta(seconds=1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2, timeout=short)
    rt = Runtime(torch.device("cpu"), rank=rank, world_size=2, control_group=distributed.control_group())
    try:
        if rank == 0:
            time.sleep(export_seconds)  # rank 0 writes the artifact, the ONNX and INT8 copies
        distributed.close(rt)
        out.put((rank, "closed"))
    except Exception as exc:
        out.put((rank, f"{type(exc).__name__}: {exc}"))


def test_the_other_ranks_outwait_a_slow_export_beyond_the_process_groups_timeout():
    with tempfile.TemporaryDirectory() as tmp:
        out = mp.get_context("spawn").SimpleQueue()
        mp.start_processes(_end_of_job_worker, args=(f"{tmp}/store", 3.0, out), nprocs=2, start_method="spawn")
        results = dict(out.get() for _ in range(2))
    assert results == {0: "closed", 1: "closed"}


def test_local_hosts_on_one_machine_split_its_gpus():
    """`byoc local train --hosts 2 --gpus auto`: each container gets GPUs of its own, not all of them."""
    from docker.types import DeviceRequest

    from byoc.local import containers as dc

    every = dc.Gpus([DeviceRequest(count=-1, capabilities=[["gpu"]])], "GPUs: all 4 (--gpus auto)")
    shares = dc.split_gpus(every, 2, [f"/dev/nvidia{i}" for i in range(4)])
    assert [s.requests[0]["DeviceIDs"] for s in shares] == [["0", "1"], ["2", "3"]]
    chosen = dc.Gpus([DeviceRequest(device_ids=["1", "3"], capabilities=[["gpu"]])], "GPUs: 1,3")
    assert [s.requests[0]["DeviceIDs"] for s in dc.split_gpus(chosen, 2)] == [["1"], ["3"]]
    assert dc.split_gpus(every, 1) == [every]
    with pytest.raises(ConfigError, match="--hosts 2 on 1 GPU"):
        dc.split_gpus(every, 2, ["/dev/nvidia0"])
