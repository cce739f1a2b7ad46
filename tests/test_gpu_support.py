"""The GPU facts table (byoc.core.gpu_support), what the images declare for the NVIDIA runtime, and the
launcher's word on EFA. No GPU needed: the facts are arguments."""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path

import pytest

from byoc.core import gpu_support
from byoc.core.gpu_support import IMAGE_BUILD

ROOT = Path(__file__).resolve().parents[1]


def test_the_table_follows_the_pinned_torch():
    pins = dict(
        line.split("==") for line in (ROOT / "docker/requirements/torch.txt").read_text().splitlines() if "==" in line
    )
    assert pins["torch"] == IMAGE_BUILD.torch


def test_the_table_describes_the_installed_wheel_when_it_is_the_pinned_one():
    """The venv's torch is PyPI's wheel of the same pin (the images' own): its CUDA and kernels are the table's."""
    torch = pytest.importorskip("torch")
    if torch.__version__.split("+")[0] != IMAGE_BUILD.torch or torch.version.cuda is None:
        pytest.skip(f"torch {torch.__version__} here is not the images' CUDA build")
    assert torch.version.cuda == IMAGE_BUILD.cuda
    archs = [a for a in torch.cuda.get_arch_list() if a.startswith("sm_")]
    assert [(int(a[3:-1]), int(a[-1])) for a in archs] == list(IMAGE_BUILD.capabilities)


@pytest.mark.parametrize(
    "instance_type", ["ml.p3.2xlarge", "p3.8xlarge", "ml.p3dn.24xlarge", "ml.p2.xlarge", "g3s.xlarge"]
)
def test_gpus_older_than_turing_are_refused_for_a_cuda_13_build(instance_type):
    """CUDA 13.0 dropped sm_50..sm_72 (its release notes): a V100 gets "no kernel image is available"."""
    problem = gpu_support.capability_problem(instance_type)
    assert problem is not None and problem.startswith(f"--instance-type {instance_type}: its ")
    assert "carries kernels for 7.5 and newer only" in problem


@pytest.mark.parametrize(
    "instance_type", ["ml.g4dn.xlarge", "g5.xlarge", "ml.g6.xlarge", "ml.p4d.24xlarge", "p5.48xlarge", "ml.m5.large"]
)
def test_turing_and_newer_and_cpu_types_pass(instance_type):
    assert gpu_support.capability_problem(instance_type) is None


def test_the_refusal_follows_the_builds_oldest_architecture():
    volta_build = dataclasses.replace(IMAGE_BUILD, capabilities=((7, 0), *IMAGE_BUILD.capabilities))
    assert gpu_support.capability_problem("ml.p3.2xlarge", build=volta_build) is None
    ampere_build = dataclasses.replace(IMAGE_BUILD, capabilities=((9, 0), (8, 0)))
    assert "T4 GPU is compute capability 7.5" in gpu_support.capability_problem("g4dn.xlarge", build=ampere_build)


def test_gpu_endpoints_get_the_inference_ami_whose_driver_runs_the_build():
    """API_ProductionVariant.html: al2023-ami-sagemaker-inference-gpu-4-1 is driver 580 / CUDA 13.0; the default
    AMIs (inference-gpu-drivers.html) are 470 to 550."""
    assert IMAGE_BUILD.min_driver <= gpu_support.INFERENCE_AMI_DRIVER
    assert gpu_support.inference_ami("ml.g4dn.xlarge") == "al2023-ami-sagemaker-inference-gpu-4-1"
    assert gpu_support.inference_ami("ml.g7.xlarge") == gpu_support.INFERENCE_AMI  # a family newer than the table
    assert gpu_support.inference_ami("ml.m5.large") is None
    assert gpu_support.inference_ami("ml.c7g.large") is None  # Graviton, not a GPU


def test_the_inference_ami_is_one_botocore_knows():
    import botocore.session

    model = botocore.session.get_session().get_service_model("sagemaker")
    assert gpu_support.INFERENCE_AMI in model.shape_for("ProductionVariantInferenceAmiVersion").enum


def test_gpu_batch_transform_is_refused_while_its_drivers_are_older_than_the_build():
    """TransformAmiVersion offers drivers 470 and 535 only (API_TransformResources.html)."""
    problem = gpu_support.transform_problem("ml.g5.xlarge")
    assert problem is not None and "batch transform runs NVIDIA driver 535 at most" in problem
    assert gpu_support.transform_problem("ml.m5.large") is None
    cuda12_build = dataclasses.replace(IMAGE_BUILD, cuda="12.2", min_driver=535)
    assert gpu_support.transform_problem("ml.g5.xlarge", build=cuda12_build) is None
    assert "compute capability 7.0" in gpu_support.transform_problem("ml.p3.2xlarge", build=cuda12_build)


def test_ec2_train_shares_the_family_rules():
    from byoc.aws import ec2_train

    assert ec2_train.is_gpu is gpu_support.is_gpu and ec2_train.family is gpu_support.family
    assert gpu_support.family("ml.p6-b200.48xlarge") == "p6-b200" and gpu_support.is_gpu("gr6.4xlarge")
    assert not gpu_support.is_gpu("m7g.large")


@pytest.mark.parametrize("dockerfile", ["docker/train/Dockerfile", "docker/serve/Dockerfile"])
def test_both_images_declare_the_gpus_and_driver_capabilities_they_need(dockerfile):
    """NVIDIA_VISIBLE_DEVICES / NVIDIA_DRIVER_CAPABILITIES: read by the NVIDIA Container Toolkit from the image
    (https://docs.nvidia.com/datacenter/cloud-native/container-toolkit/latest/docker-specialized.html)."""
    text = (ROOT / dockerfile).read_text().replace("\\\n", " ")
    runtime = text.split("\nFROM ")[-1]  # the image's last stage: the one that ships
    env = dict(
        pair.split("=", 1)
        for line in runtime.splitlines()
        if line.startswith("ENV ")
        for pair in re.findall(r"\S+=\S+", line)
    )
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert env["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"


def _job(tmp_path, instance_type: str, hosts: list[str]):
    from byoc.training.contract import Job

    job = Job.one_host(tmp_path, {}, num_cpus=8, num_gpus=8)
    return dataclasses.replace(job, hosts=hosts, instance_type=instance_type, network_interface="eth0")


def test_efa_instances_get_no_libfabric_settings_the_image_cannot_use(tmp_path, monkeypatch):
    """The image has no libfabric / aws-ofi-nccl, NCCL's only way to EFA
    (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/efa-start-nccl.html): FI_* would change nothing."""
    from byoc.training import launch
    from byoc.training.contract import TrainConfig

    for key in ("FI_PROVIDER", "FI_EFA_USE_DEVICE_RDMA", "RDMAV_FORK_SAFE"):
        monkeypatch.delenv(key, raising=False)
    env = launch.distributed_env(_job(tmp_path, "ml.p4d.24xlarge", ["algo-1", "algo-2"]), TrainConfig())
    assert not {"FI_PROVIDER", "FI_EFA_USE_DEVICE_RDMA", "RDMAV_FORK_SAFE"} & set(env)
    assert env["NCCL_SOCKET_IFNAME"] == "eth0"


def test_a_multi_host_efa_job_says_nccl_talks_tcp(tmp_path, monkeypatch, caplog):
    from byoc.training import launch
    from byoc.training.contract import TrainConfig

    job = _job(tmp_path, "ml.p5.48xlarge", ["algo-1", "algo-2"])
    assert "NCCL talks TCP between hosts over eth0" in launch.network_note(job)
    assert launch.network_note(_job(tmp_path, "ml.p5.48xlarge", ["algo-1"])) is None  # one host: NVLink, no network
    assert launch.network_note(_job(tmp_path, "ml.g5.12xlarge", ["algo-1", "algo-2"])) is None  # no EFA to miss

    class Stop(Exception):
        pass

    def stop(*args, **kwargs):
        raise Stop()

    monkeypatch.setattr(launch, "wait_for_hosts", lambda hosts: None)
    monkeypatch.setattr(launch.subprocess, "Popen", stop)
    with caplog.at_level(logging.WARNING, logger="byoc.training.launch"), pytest.raises(Stop):
        launch.run_torchrun(job, TrainConfig(), [])
    assert any("has EFA, but the training image has no libfabric" in r.getMessage() for r in caplog.records)


PROPRIETARY = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  470.256.02  Thu May  2 14:37:44 UTC 2024\nGCC version:\n"
OPEN = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.95.05  Release Build  (dvs-builder@U16)\n"


def test_the_driver_is_read_from_either_kernel_module():
    assert gpu_support.driver_version(PROPRIETARY) == "470.256.02"
    assert gpu_support.driver_version(OPEN) == "580.95.05"
    assert gpu_support.driver_version("") is None


def test_the_start_up_check_reads_the_loaded_driver_when_nvidia_smi_is_absent(tmp_path, monkeypatch):
    """A container without nvidia-smi still names the driver it found (byoc.core.gpu_guard's facts)."""
    from byoc.core import gpu_guard

    version = tmp_path / "version"
    version.write_text(PROPRIETARY)
    monkeypatch.setattr(gpu_guard, "DRIVER_FILE", str(version))
    monkeypatch.setattr(gpu_guard, "_nvidia_smi", lambda: (None, None, ()))
    monkeypatch.setenv("SM_NUM_GPUS", "1")
    facts = gpu_guard.gather()
    assert facts.driver_version == "470.256.02"
    assert "NVIDIA driver 470.256.02 found, torch's CUDA" in (gpu_guard.problem(facts) or "")
