"""Which GPUs and NVIDIA drivers the byoc images run on: the one table of those facts (stdlib only: the
AWS layer reads it to refuse instance types before anything is created). docs/gpu.md explains it.

The images install torch from PyPI (docker/requirements/torch.txt), whose Linux wheels bundle the CUDA
runtime they were built with. That build fixes two things the host must meet:

* the NVIDIA driver: a CUDA 13.0 build needs driver 580 or newer ("CUDA Toolkit and Minimum Required Driver
  Version", https://docs.nvidia.com/cuda/cuda-toolkit-release-notes/index.html). On an older driver
  torch.cuda.is_available() is False. NVIDIA's forward-compatibility package (cuda-compat-13-0) would bridge
  older data-center drivers, but it is published only in NVIDIA's own CUDA repositories, not on PyPI or in
  Debian, so the images do not carry it: byoc runs them where the driver is new enough, and refuses the rest.
* the GPU's compute capability: CUDA 13.0 dropped offline compilation for Maxwell, Pascal and Volta
  (sm_50 to sm_72; the 13.0 release notes' "Deprecated or Dropped Features"), so the wheels carry kernels
  for Turing (sm_75) and newer only: a V100 (P3) fails with "no kernel image is available".
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class CudaBuild:
    """What a torch build needs of the host."""

    torch: str  # the pinned version, as in docker/requirements/torch.txt
    cuda: str
    min_driver: int  # the NVIDIA driver's major version (its branch), e.g. 580
    capabilities: tuple[tuple[int, int], ...]  # the architectures it has kernels for (torch.cuda.get_arch_list())

    @property
    def min_capability(self) -> tuple[int, int]:
        """The oldest GPU architecture it runs on."""
        return min(self.capabilities)


# The oldest driver each CUDA major version runs on (minor version compatibility), from NVIDIA's
# "CUDA Toolkit and Driver Version Ranges" table:
# https://docs.nvidia.com/deploy/cuda-compatibility/minor-version-compatibility.html
MIN_DRIVER = {13: 580, 12: 525, 11: 450}

# docker/requirements/torch.txt's torch: its wheel requires cuda-toolkit==13.0.3 and reports
# get_arch_list() sm_75 .. sm_120; tests/test_gpu_support.py checks both against the installed wheel.
IMAGE_BUILD = CudaBuild(
    torch="2.14.1",
    cuda="13.0",
    min_driver=MIN_DRIVER[13],
    capabilities=((7, 5), (8, 0), (8, 6), (9, 0), (10, 0), (12, 0)),
)

# Instance family -> (GPU, CUDA compute capability), from the EC2 accelerated computing instance pages
# (https://docs.aws.amazon.com/ec2/latest/instancetypes/ac.html) and NVIDIA's table of capabilities
# (https://developer.nvidia.com/cuda-gpus). SageMaker's ml.* types share the EC2 family names.
GPU_FAMILIES: dict[str, tuple[str, tuple[int, int]]] = {
    "p2": ("K80", (3, 7)),
    "g3": ("M60", (5, 2)),
    "g3s": ("M60", (5, 2)),
    "p3": ("V100", (7, 0)),
    "p3dn": ("V100", (7, 0)),
    "g4dn": ("T4", (7, 5)),
    "g5": ("A10G", (8, 6)),
    "p4d": ("A100", (8, 0)),
    "p4de": ("A100", (8, 0)),
    "g6": ("L4", (8, 9)),
    "gr6": ("L4", (8, 9)),
    "g6e": ("L40S", (8, 9)),
    "p5": ("H100", (9, 0)),
    "p5e": ("H200", (9, 0)),
    "p5en": ("H200", (9, 0)),
    "p6-b200": ("B200", (10, 0)),
}

# SageMaker hosting's AMI with driver 580 (CUDA 13.0), chosen per production variant with InferenceAmiVersion:
# the ProductionVariant API reference, https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_ProductionVariant.html
# ("al2023-ami-sagemaker-inference-gpu-4-1: NVIDIA driver version 580, CUDA version 13.0"). Without it a
# GPU endpoint gets the default driver of its family, 470 to 550
# (https://docs.aws.amazon.com/sagemaker/latest/dg/inference-gpu-drivers.html): too old for IMAGE_BUILD.
INFERENCE_AMI = "al2023-ami-sagemaker-inference-gpu-4-1"
INFERENCE_AMI_DRIVER = 580
# Batch transform offers drivers 470 and 535 only (TransformResources.TransformAmiVersion:
# al2-ami-sagemaker-batch-gpu-470 and -535, API_TransformResources.html): none runs IMAGE_BUILD.
TRANSFORM_MAX_DRIVER = 535


def family(instance_type: str) -> str:
    """`ml.g4dn.xlarge` and `g4dn.xlarge` -> `g4dn`."""
    return instance_type.lower().removeprefix("ml.").split(".", 1)[0]


def is_gpu(instance_type: str) -> bool:
    """EC2's NVIDIA GPU families are named G or P and a generation (g4dn, gr6, p3, p6-b200); the Graviton ones
    (c7g, m7g) end in g instead. (g4ad's GPU is AMD's, which the images cannot use either way.)"""
    return re.match(r"(g|gr|p)\d", family(instance_type)) is not None


def gpu(instance_type: str) -> tuple[str, tuple[int, int]] | None:
    """The (GPU, compute capability) of an instance type of GPU_FAMILIES; None for any other type."""
    return GPU_FAMILIES.get(family(instance_type))


def capability_problem(instance_type: str, flag: str = "--instance-type", build: CudaBuild = IMAGE_BUILD) -> str | None:
    """Why the images cannot use the GPU of `instance_type` (its compute capability is older than the
    build's kernels), or None."""
    found = gpu(instance_type)
    if found is None or found[1] >= build.min_capability:
        return None
    name, (major, minor) = found
    oldest = ".".join(map(str, build.min_capability))
    return (
        f"{flag} {instance_type}: its {name} GPU is compute capability {major}.{minor}, and the images' torch "
        f"{build.torch} (CUDA {build.cuda}) carries kernels for {oldest} and newer only; pick g4dn, g5, g6, p4d "
        "or newer (docs/gpu.md)"
    )


def transform_problem(instance_type: str, build: CudaBuild = IMAGE_BUILD) -> str | None:
    """Why a batch transform job cannot use the GPU of `instance_type`, or None: its drivers are too old."""
    if not is_gpu(instance_type) or build.min_driver <= TRANSFORM_MAX_DRIVER:
        return capability_problem(instance_type, build=build)
    return (
        f"--instance-type {instance_type}: SageMaker batch transform runs NVIDIA driver {TRANSFORM_MAX_DRIVER} at "
        f"most, and the images' torch {build.torch} (CUDA {build.cuda}) needs {build.min_driver} or newer; "
        "transform on a CPU type (ml.m5, ml.c5) or call a GPU endpoint (docs/gpu.md)"
    )


def inference_ami(instance_type: str) -> str | None:
    """The InferenceAmiVersion a production variant of `instance_type` needs for the images' driver; None
    for a CPU type (SageMaker's default AMI serves it)."""
    return INFERENCE_AMI if is_gpu(instance_type) else None


# The loaded NVIDIA kernel module names its version here, inside containers too (the runtime mounts /proc).
DRIVER_FILE = "/proc/driver/nvidia/version"


def driver_version(text: str) -> str | None:
    """The driver's version in DRIVER_FILE's text, or None. Its first line reads "NVRM version: NVIDIA UNIX
    x86_64 Kernel Module  580.65.06  ..." for the proprietary module and "... Open Kernel Module for x86_64
    580.95.05 ..." for the open one (which AWS's DLAMIs load)."""
    found = re.search(r"Kernel Module(?:\s+for\s+\S+)?\s+(\d+(?:\.\d+)+)", text)
    return found[1] if found else None
