"""No silent CPU fallback: when this host has GPUs and torch cannot use them, training and serving
stop with the reason (the driver found, the driver this torch build needs, what to do) instead of
running on the CPU.

`gather` reads the facts (SM_NUM_GPUS, /dev/nvidia*, nvidia-smi, torch's CUDA build); `problem`
decides from them alone, so every case is testable without a GPU; `require` is the one call the
training and serving start-ups make. Nothing heavy is imported until `gather` runs.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field

from byoc.core.errors import ByocError
from byoc.core.gpu_support import DRIVER_FILE, MIN_DRIVER, driver_version

SMI_TIMEOUT_SECONDS = 30


class GpuUnusable(ByocError):
    """GPUs are expected here and torch cannot use them all."""


@dataclass(frozen=True)
class Facts:
    """What this host says about its GPUs, and what torch can do with them."""

    sm_num_gpus: int | None = None  # SageMaker's SM_NUM_GPUS, when set
    device_nodes: int = 0  # /dev/nvidia0, /dev/nvidia1, ...
    smi_gpus: int | None = None  # GPUs nvidia-smi lists; None when it is absent or failed
    driver_version: str | None = None  # nvidia-smi's driver_version
    capabilities: tuple[tuple[int, int], ...] = ()  # nvidia-smi's compute_cap per GPU, when it reports it
    cuda_available: bool = False  # torch.cuda.is_available()
    torch_device_count: int = 0  # torch.cuda.device_count() when available
    torch_cuda: str | None = None  # torch.version.cuda: None for a CPU-only build
    arch_list: tuple[str, ...] = field(default_factory=tuple)  # torch.cuda.get_arch_list()
    visible: int | None = None  # devices CUDA_VISIBLE_DEVICES names, when set (nvidia-smi ignores it)

    @property
    def expected_gpus(self) -> int:
        """GPUs this process should see by any account (SageMaker, device nodes, nvidia-smi),
        narrowed by CUDA_VISIBLE_DEVICES when set."""
        found = max(self.sm_num_gpus or 0, self.device_nodes, self.smi_gpus or 0)
        return found if self.visible is None else min(found, self.visible)


def required_driver(torch_cuda: str | None) -> int | None:
    """The oldest driver major version torch's CUDA build runs on; None when unknown."""
    if not torch_cuda:
        return None
    return MIN_DRIVER.get(int(torch_cuda.split(".")[0]))


def has_kernels(capability: tuple[int, int], arch_list: tuple[str, ...]) -> bool:
    """Whether a build for `arch_list` runs on a GPU of `capability`: a sm_XY binary runs on the same
    major version at an equal or higher minor one, compute_XY PTX on any equal or newer GPU
    (https://docs.nvidia.com/cuda/cuda-c-programming-guide/#binary-compatibility)."""
    for arch in arch_list:
        m = re.fullmatch(r"(sm|compute)_(\d+)(\d)[af]?", arch)
        if not m:
            continue
        built = (int(m.group(2)), int(m.group(3)))
        if m.group(1) == "sm" and built[0] == capability[0] and built[1] <= capability[1]:
            return True
        if m.group(1) == "compute" and built <= capability:
            return True
    return not arch_list  # nothing listed: nothing to judge by


def problem(facts: Facts) -> str | None:
    """Why torch cannot use this host's GPUs, in one line; None when it can, or none are expected."""
    expected = facts.expected_gpus
    if expected == 0:
        return None
    seen = f"this host has {expected} GPU(s)"
    if facts.torch_cuda is None:
        return (
            f"{seen} but torch is a CPU-only build: install a CUDA build of torch (the byoc GPU image has one), "
            "or run on a CPU instance type"
        )
    needed = required_driver(facts.torch_cuda)
    driver = facts.driver_version or "unknown (nvidia-smi did not answer)"
    if not facts.cuda_available:
        return (
            f"{seen} but torch cannot use them: NVIDIA driver {driver} found, torch's CUDA {facts.torch_cuda} "
            f"build needs driver >= {needed or '?'}: use an instance type or AMI with a newer driver, "
            "or run on a CPU instance type"
        )
    old = [c for c in facts.capabilities if not has_kernels(c, facts.arch_list)]
    if old:
        cap = f"{old[0][0]}.{old[0][1]}"
        return (
            f"{seen} of compute capability {cap} and torch's CUDA {facts.torch_cuda} build has no kernels for it "
            f"(built for {', '.join(facts.arch_list)}): use a newer GPU instance type"
        )
    if facts.torch_device_count < expected:
        return (
            f"{seen} but torch sees {facts.torch_device_count} (NVIDIA driver {driver}): check CUDA_VISIBLE_DEVICES "
            "and that the container was given every GPU (--gpus all)"
        )
    return None


def _capability(text: str) -> tuple[int, int]:
    major, minor = text.split(".")
    return int(major), int(minor)


def _nvidia_smi() -> tuple[int | None, str | None, tuple[tuple[int, int], ...]]:
    """(GPUs listed, driver version, compute capabilities) from nvidia-smi; (None, None, ()) without it."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None, None, ()
    query = [smi, "--query-gpu=driver_version,compute_cap", "--format=csv,noheader"]
    try:
        out = subprocess.run(query, capture_output=True, text=True, timeout=SMI_TIMEOUT_SECONDS, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None, None, ()
    rows = [[c.strip() for c in line.split(",")] for line in out.splitlines() if line.strip()]
    caps = tuple(_capability(r[1]) for r in rows if len(r) > 1 and re.fullmatch(r"\d+\.\d+", r[1]))
    return len(rows), (rows[0][0] if rows else None), caps


def _loaded_driver() -> str | None:
    """The loaded kernel module's version, for a container without nvidia-smi."""
    try:
        with open(DRIVER_FILE) as f:
            return driver_version(f.read())
    except OSError:
        return None


def gather() -> Facts:
    """This host's facts (runs nvidia-smi and asks torch; a CPU-only torch is fine)."""
    import torch

    sm = os.environ.get("SM_NUM_GPUS", "").strip()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    smi_gpus, driver, caps = _nvidia_smi()
    driver = driver or _loaded_driver()
    available = torch.cuda.is_available()
    return Facts(
        sm_num_gpus=int(sm) if sm.isdigit() else None,
        device_nodes=len(glob.glob("/dev/nvidia[0-9]*")),
        smi_gpus=smi_gpus,
        driver_version=driver,
        capabilities=caps,
        cuda_available=available,
        torch_device_count=torch.cuda.device_count() if available else 0,
        torch_cuda=torch.version.cuda,
        arch_list=tuple(torch.cuda.get_arch_list()) if available else (),
        visible=None if visible is None else len([d for d in visible.split(",") if d.strip()]),
    )


def require(facts: Facts | None = None) -> Facts:
    """The facts, when torch can use every GPU this host has (or it has none); else GpuUnusable."""
    facts = gather() if facts is None else facts
    reason = problem(facts)
    if reason is not None:
        raise GpuUnusable(reason)
    return facts
