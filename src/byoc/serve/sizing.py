"""How many model-server workers and torch threads per worker this machine can afford."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import psutil

WORKER_OVERHEAD = 500 * 1024**2  # python + torch runtime per worker process, measured ~350-450 MB
MODEL_FACTOR = 4  # weights + activations + allocator slack, as multiples of the weights' size
MEMORY_SHARE = 0.8  # leave room for the JVM frontend and request buffers
THREADS_PER_CPU_WORKER = 4  # intra-op scaling flattens beyond ~4 threads for one image
MB = 1024**2
# What one request body of P bytes costs while it is in flight, in copies of P. The front holds the
# body and, for a multi-record body, the records decoded from it (at most P more: byoc.serve.batching
# keeps no more than the body limit of records in flight). Each call the front sends the model server
# (at most one per worker) is held by the JVM (Netty's aggregated request, then the message to the
# worker) and read once more by the worker.
FRONT_BODY_COPIES = 2
JVM_BODY_COPIES = 2
WORKER_BODY_COPIES = 1
JVM_BASE_MB = 512  # the model server's heap without request bodies (MMS's own default -Xmx512m was enough)


def _read(*paths: str) -> str | None:
    """The first of these cgroup files that exists (v2 names first, then v1)."""
    for path in paths:
        try:
            return Path("/sys/fs/cgroup", path).read_text().strip()
        except OSError:
            continue
    return None


def _number(text: str | None) -> int | None:
    return int(text) if text and text.lstrip("-").isdigit() else None


def cpu_count() -> int:
    """Cores this process may use: CPU affinity, capped by a cgroup CPU quota (v2 or v1)."""
    cores = len(os.sched_getaffinity(0))
    quota = period = None
    v2 = _read("cpu.max")
    if v2 and not v2.startswith("max"):
        quota, period = (_number(x) for x in v2.split()[:2])
    elif v2 is None:
        quota, period = _number(_read("cpu/cpu.cfs_quota_us")), _number(_read("cpu/cpu.cfs_period_us"))
    if quota and period and quota > 0:
        cores = min(cores, max(1, quota // period))
    return max(1, cores)


def gpu_count() -> int:
    """NVIDIA GPUs this container may use, without importing torch: the NVIDIA container runtime
    mounts only the assigned /dev/nvidiaN devices; CUDA_VISIBLE_DEVICES narrows them further."""
    devices = len([p for p in Path("/dev").glob("nvidia*") if p.name[6:].isdigit()])
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and devices:
        devices = min(devices, len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"]))
    return devices


def weights_bytes(model_dir: Path) -> int:
    """Roughly the model's size in memory: its largest file (the weights dominate any artifact)."""
    sizes = [p.stat().st_size for p in Path(model_dir).iterdir() if p.is_file()] if Path(model_dir).is_dir() else []
    return max(sizes, default=0)


def memory_available() -> int:
    """Bytes that can still be allocated: the machine's available memory, capped by a cgroup limit."""
    available = psutil.virtual_memory().available
    limit = _number(_read("memory.max", "memory/memory.limit_in_bytes"))
    used = _number(_read("memory.current", "memory/memory.usage_in_bytes"))
    if limit is not None and used is not None and limit < 2**60:  # v1 says "no limit" with a huge number
        available = min(available, limit - used)
    return max(0, available)


def worker_bytes(model_bytes: int) -> int:
    """Memory one model worker needs, bodies aside."""
    return WORKER_OVERHEAD + MODEL_FACTOR * model_bytes


def payload_mb(memory: int, workers: int, model_bytes: int, concurrent: int, most: int) -> int:
    """The largest request body, in MB (1..most), that `concurrent` requests in flight at once can
    each carry in the memory the workers leave: bodies at the front, one call per worker in the
    model server and in the worker (the *_BODY_COPIES above), the JVM's base heap aside.

    Memory share left = memory x MEMORY_SHARE - workers x worker_bytes - JVM_BASE_MB, divided by
    (concurrent x FRONT_BODY_COPIES + workers x (JVM_BODY_COPIES + WORKER_BODY_COPIES)) bodies. For
    example 8 GiB, 2 workers of a 45 MB model, 2 transforms: (6554 - 1360 - 512) MB / 10 = 468 ->
    100; 2 GiB: negative -> 1."""
    left = memory * MEMORY_SHARE - workers * worker_bytes(model_bytes) - JVM_BASE_MB * MB
    bodies = concurrent * FRONT_BODY_COPIES + workers * (JVM_BODY_COPIES + WORKER_BODY_COPIES)
    return max(1, min(most, int(left // (bodies * MB))))


def jvm_heap_mb(payload_bytes: int, calls: int) -> int:
    """The model server's -Xmx, in MB: its base heap plus JVM_BODY_COPIES of a full body for each
    of the `calls` it holds at once (the front sends one per worker), so no body within the limit
    runs it out of memory (Netty's direct buffers share this bound, -XX:MaxDirectMemorySize's default)."""
    return JVM_BASE_MB + calls * JVM_BODY_COPIES * -(-payload_bytes // MB)


@dataclass(frozen=True)
class Plan:
    workers: int
    threads: int
    reason: str


def plan(
    cores: int, gpus: int, model_bytes: int, memory: int, workers: int | None = None, threads: int | None = None
) -> Plan:
    """Workers from GPUs or cores, capped by memory; threads per worker up to all the cores."""
    by_memory = max(1, int(memory * MEMORY_SHARE // worker_bytes(model_bytes)))
    default_threads = None
    if workers is not None:
        reason = "SAGEMAKER_MODEL_SERVER_WORKERS"
    elif gpus:
        workers, reason = min(gpus, by_memory), f"one per GPU ({gpus}), memory allows {by_memory}"
    else:
        # Each worker gets up to 4 threads, so one request alone is as fast as the cores allow;
        # and at least two workers, so one worker's decoding (single-threaded) overlaps another's
        # forward pass. With OpenMP's passive waiting the oversubscription costs little: on 2 cores
        # 2 x 2 threads kept 1 x 2's latency at concurrency 1 and doubled saturated throughput.
        default_threads = min(cores, THREADS_PER_CPU_WORKER)
        workers = min(max(cores // default_threads, 2 if cores >= 2 else 1), by_memory)
        reason = (
            f"{cores} cores, up to {THREADS_PER_CPU_WORKER} threads per worker, at least 2 workers; "
            f"memory allows {by_memory}"
        )
    threads = threads or default_threads or max(1, cores // workers)
    return Plan(workers=workers, threads=threads, reason=reason)
