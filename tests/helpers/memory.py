"""The memory a piece of preprocessing holds at its peak, and the bounds the tests hold it to."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

from torch.profiler import ProfilerActivity, profile


def allocated_peak(fn: Callable[[], object]) -> int:
    """Bytes `fn` holds at most: torch's CPU allocator (the profiler's memory events, which include the
    kernels' own buffers; tracemalloc does not see them) plus numpy and Python (tracemalloc). The sum
    of the two peaks is an upper bound of the peak of their sum."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        tracemalloc.start()
        try:
            fn()
            numpy_peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    events = sorted(
        (e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"), key=lambda e: e.start_ns()
    )
    live = torch_peak = 0
    for event in events:
        live += event.nbytes()
        torch_peak = max(torch_peak, live)
    return torch_peak + numpy_peak


# What the transform may hold beyond the decoded image it is given, as multiples of the decoded
# image's bytes and of the output tensor's. Measured worst cases at image size 224: with torch's uint8
# kernels (AVX2, AVX-512, ARM: every SageMaker instance) 3.9 x the decoded image at 4400x275 (the
# pixels copied out of Pillow twice, the kernel's RGBA copies, the resized image) and 6.3 outputs at
# 16x1; on the float path (x86 without AVX2), which converts and resizes in float32, 14 x at 250x4000
# and 26 outputs at 16x1. Without the window path a 40000x1 PNG held 240 MiB at image size 32 (and
# 256 x 10,240,000 x 3 bytes = 7.3 GiB of resized pixels at 224); with it, 0.08 MiB and 0.79 MiB.
BOUNDS = {"uint8": (3, 16), "float": (10, 48)}
