"""Which precision a TorchScript worker serves in (`serve_dtype`), decided from facts passed in (the
device's kind and compute capability, model.json's "half" entry, BYOC_PRECISION), so that the rule
is plain Python a CPU test reaches. No torch: the worker asks torch for the facts
(byoc.serve.runtimes) and byoc.core.half_precision measures and records the entry.

Half precision is served only on CUDA, only in a dtype whose top-1 on the job's validation split
stayed within the entry's `max_drop` points of fp32's (the INT8 copy's rule, byoc.core.quantize),
and never under BYOC_PRECISION=fp32. The dtype follows the GPU: bf16 from compute capability 8.0
(Ampere), the first whose tensor cores take bf16 (PTX's mma .bf16 needs sm_80:
https://docs.nvidia.com/cuda/parallel-thread-execution/); fp16 before that (T4, V100), whose tensor
cores take fp16 only, so that bf16 there runs without them.
"""

from __future__ import annotations

from typing import Any

from byoc.serve.config import Precision

FP32, FP16, BF16 = "fp32", "fp16", "bf16"
HALF_DTYPES = (FP16, BF16)
BF16_FROM = (8, 0)  # the first compute capability with bf16 tensor cores (A100, A10G, L4, H100)


def half_dtype(capability: tuple[int, int]) -> str:
    """The half-precision dtype a GPU of this compute capability runs fastest: bf16 from 8.0, else fp16."""
    return BF16 if tuple(capability) >= BF16_FROM else FP16


def within_tolerance(entry: dict[str, Any] | None, dtype: str) -> bool:
    """Whether model.json's "half" `entry` records `dtype` with a top-1 no more than its `max_drop`
    points under fp32's on the same images."""
    if not isinstance(entry, dict) or not isinstance(entry.get(dtype), dict):
        return False
    try:
        drop = float(entry["top1_fp32"]) - float(entry[dtype]["top1"])
        return drop <= float(entry["max_drop"])
    except (KeyError, TypeError, ValueError):  # a malformed entry allows nothing
        return False


def serve_dtype(
    device_kind: str, capability: tuple[int, int] | None, entry: dict[str, Any] | None, forced: Precision | None
) -> str:
    """fp32, fp16 or bf16: the dtype a TorchScript worker on a device of `device_kind` ("cpu",
    "cuda") with compute `capability` serves in, given model.json's "half" `entry` and BYOC_PRECISION
    (`forced`: fp32 always serves fp32)."""
    if forced is Precision.FP32 or device_kind != "cuda" or capability is None:
        return FP32
    dtype = half_dtype(capability)
    return dtype if within_tolerance(entry, dtype) else FP32
