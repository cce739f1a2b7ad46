"""No silent CPU fallback (byoc.core.gpu_guard): the decision from a host's GPU facts, and the
training and serving start-ups that stop on it. Facts are passed in or gathered with torch.cuda
patched: this machine has no GPU."""

from __future__ import annotations

import signal

import pytest
import torch

from byoc.core import gpu_guard
from byoc.core.gpu_guard import Facts, GpuUnusable
from byoc.serve import handler
from byoc.training import contract, distributed, launch
from byoc.training.contract import Job, TrainConfig

OLD_DRIVER = Facts(sm_num_gpus=1, device_nodes=1, smi_gpus=1, driver_version="535.183.01", torch_cuda="13.0")
WORKING = Facts(
    sm_num_gpus=4,
    device_nodes=4,
    smi_gpus=4,
    driver_version="580.95.05",
    capabilities=((7, 5),) * 4,
    cuda_available=True,
    torch_device_count=4,
    torch_cuda="13.0",
    arch_list=("sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"),
)


def test_a_host_without_gpus_has_no_problem():
    assert gpu_guard.problem(Facts(torch_cuda="13.0")) is None
    assert gpu_guard.problem(Facts()) is None


def test_usable_gpus_have_no_problem():
    assert gpu_guard.problem(WORKING) is None


def test_cuda_13_needs_driver_580_per_nvidias_minor_version_compatibility_table():
    """https://docs.nvidia.com/deploy/cuda-compatibility/minor-version-compatibility.html"""
    assert gpu_guard.required_driver("13.0") == 580
    assert gpu_guard.required_driver("12.8") == 525
    assert gpu_guard.required_driver(None) is None


def test_an_old_driver_names_the_driver_found_and_needed_and_what_to_do():
    message = gpu_guard.problem(OLD_DRIVER)
    assert message == (
        "this host has 1 GPU(s) but torch cannot use them: NVIDIA driver 535.183.01 found, torch's CUDA 13.0 "
        "build needs driver >= 580: use an instance type or AMI with a newer driver, or run on a CPU instance type"
    )


@pytest.mark.parametrize(
    "facts",
    [Facts(sm_num_gpus=1), Facts(device_nodes=2), Facts(smi_gpus=1, driver_version="580.1")],
    ids=["SM_NUM_GPUS", "dev-nvidia", "nvidia-smi"],
)
def test_any_sign_of_a_gpu_with_a_cpu_only_torch_is_a_problem(facts):
    assert "CPU-only build" in gpu_guard.problem(facts)


def test_a_gpu_without_kernels_in_the_build_is_a_problem():
    v100 = Facts(**{**WORKING.__dict__, "capabilities": ((7, 0),)})
    assert "compute capability 7.0" in gpu_guard.problem(v100)


@pytest.mark.parametrize(
    ("capability", "arch_list", "runs"),
    [
        ((8, 6), ("sm_80",), True),  # same major, newer minor
        ((7, 0), ("sm_75", "sm_80"), False),
        ((9, 0), ("sm_80",), False),  # SASS does not cross a major version
        ((9, 0), ("sm_80", "compute_80"), True),  # PTX is JIT-compiled for newer GPUs
        ((10, 0), ("sm_100a",), True),
    ],
)
def test_kernels_follow_cudas_binary_compatibility(capability, arch_list, runs):
    assert gpu_guard.has_kernels(capability, arch_list) is runs


def test_torch_seeing_fewer_gpus_than_the_host_has_is_a_problem():
    fewer = Facts(**{**WORKING.__dict__, "torch_device_count": 2})
    assert "torch sees 2" in gpu_guard.problem(fewer)
    assert gpu_guard.problem(Facts(**{**fewer.__dict__, "visible": 2})) is None  # CUDA_VISIBLE_DEVICES=0,1


def test_gather_reads_sm_num_gpus_and_torch(monkeypatch):
    monkeypatch.setenv("SM_NUM_GPUS", "2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    facts = gpu_guard.gather()
    assert facts.sm_num_gpus == 2 and not facts.cuda_available and facts.torch_cuda == torch.version.cuda


def test_training_on_a_gpu_job_stops_instead_of_running_on_the_cpu(monkeypatch, tmp_path):
    monkeypatch.setenv("SM_NUM_GPUS", "1")  # SageMaker says the host has a GPU; this torch sees none
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(GpuUnusable, match="this host has 1 GPU"):
        distributed.setup(Job.one_host(tmp_path, {}, num_cpus=1))


def test_the_launcher_ends_the_job_with_the_guards_reason(monkeypatch, tmp_path):
    """The reason reaches SageMaker's failure file through TrainingFailed (launch.end)."""
    job = Job.one_host(tmp_path, {}, num_cpus=4, num_gpus=1)
    monkeypatch.setattr(contract, "load", lambda argv: (job, TrainConfig()))
    monkeypatch.setattr(gpu_guard, "gather", lambda: OLD_DRIVER)
    monkeypatch.setattr("byoc.training.train.configure_logging", lambda: None)
    monkeypatch.setattr("sys.argv", ["train"])
    before = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(launch.TrainingFailed, match="GpuUnusable: .*535.183.01 found.*>= 580"):
            launch.main()
    finally:
        signal.signal(signal.SIGTERM, before)


def test_serving_on_a_gpu_host_stops_instead_of_serving_on_the_cpu(monkeypatch):
    monkeypatch.setattr(gpu_guard, "gather", lambda: OLD_DRIVER)
    with pytest.raises(GpuUnusable, match="driver 535.183.01 found"):
        handler.pick_device()


def test_serving_picks_the_assigned_gpu(monkeypatch):
    monkeypatch.setattr(gpu_guard, "gather", lambda: WORKING)
    assert handler.pick_device(2) == "cuda:2"
