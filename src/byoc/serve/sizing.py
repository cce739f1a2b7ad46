"""How many model-server workers and torch threads per worker this machine can afford."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import psutil

# python + torch runtime per worker process, measured ~350-450 MB. An ONNX Runtime worker (byoc-serve:cpu,
# no torch) is far smaller: ResNet-50 loaded and answering, 122 MB RSS in INT8 and 298 MB in fp32
# against 776 MB with TorchScript (handler in one process, 2 threads): the bound stays torch's.
WORKER_OVERHEAD = 500 * 1024**2
MODEL_FACTOR = 4  # weights + activations + allocator slack, as multiples of the weights' size
MEMORY_SHARE = 0.8  # leave room for the JVM frontend and request buffers
THREADS_PER_CPU_WORKER = 4  # intra-op scaling flattens beyond ~4 threads for one image
# Model workers per GPU, at most (see workers_per_gpu): each holds its own CUDA context and copy of
# the model and its activations on the GPU, an estimated few hundred MB each for a ResNet-50 at
# GPU_BATCH_SIZE in half precision: four fit the smallest GPU served on (T4, 16 GB) with room to spare.
MAX_WORKERS_PER_GPU = 4
# The front's batch cap (BYOC_BATCH_SIZE unset). On the CPU a batch costs about its images' time
# (byoc.core.quantize's figures), so small batches keep latency. A GPU at batch 1 leaves most of its
# cores idle, so a larger batch raises throughput under load (bench/gpu_check.py measures batch 1
# against the best batch on the GPU at hand); one request alone still goes alone, since the front
# groups only requests already waiting for a busy worker (byoc.serve.batching).
CPU_BATCH_SIZE = 4
GPU_BATCH_SIZE = 32
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
# Under a memory limit the base heap is at most this share of it, so that the JVM fits beside a
# worker in SageMaker Serverless Inference's smallest size (1024 MB: 128 MB of base heap).
JVM_BASE_SHARE = 1 / 8
# SageMaker Serverless Inference runs the container with a memory limit of 1024..6144 MB and gives
# it vCPUs in proportion; a cgroup limit at most this large is taken for serverless.
SERVERLESS_MAX_MEMORY = 6144 * 1024**2
# Memory per vCPU where no CPU quota says: AWS Lambda's documented rule (1769 MB = one vCPU), the
# same proportional scheme; SageMaker does not publish its own.
MB_PER_VCPU = 1769


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


def cpu_quota() -> float | None:
    """The cgroup CPU quota in CPUs (v2 cpu.max, or v1 cfs_quota_us / cfs_period_us); None without one."""
    quota = period = None
    v2 = _read("cpu.max")
    if v2 and not v2.startswith("max"):
        quota, period = (_number(x) for x in v2.split()[:2])
    elif v2 is None:
        quota, period = _number(_read("cpu/cpu.cfs_quota_us")), _number(_read("cpu/cpu.cfs_period_us"))
    return quota / period if quota and period and quota > 0 else None


def cpu_count() -> int:
    """Cores this process may use: CPU affinity, capped by a cgroup CPU quota (v2 or v1)."""
    cores = len(os.sched_getaffinity(0))
    quota = cpu_quota()
    if quota is not None:
        cores = min(cores, max(1, int(quota)))
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


def memory_limit() -> int | None:
    """The cgroup memory limit in bytes (v2 memory.max or v1 limit_in_bytes); None without one."""
    limit = _number(_read("memory.max", "memory/memory.limit_in_bytes"))
    return limit if limit is not None and limit < 2**60 else None  # v1 says "no limit" with a huge number


def memory_available(droppable_cache: bool = False) -> int:
    """Bytes that can still be allocated: the machine's available memory, capped by a cgroup limit;
    with `droppable_cache`, the page cache the kernel can drop (inactive files) counted as free."""
    available = psutil.virtual_memory().available
    limit = memory_limit()
    used = _number(_read("memory.current", "memory/memory.usage_in_bytes"))
    if limit is not None and used is not None:
        cache = (
            (_stat("inactive_file", "memory.stat") or _stat("total_inactive_file", "memory/memory.stat") or 0)
            if droppable_cache
            else 0
        )
        available = min(available, limit - used + cache)
    return max(0, available)


def oom_kills() -> int:
    """Processes the kernel has killed for memory in this cgroup (v2 memory.events, else v1)."""
    return _stat("oom_kill", "memory.events", "memory/memory.oom_control") or 0


def _stat(key: str, *paths: str) -> int | None:
    """`key`'s number in the first of these cgroup "key value" files that exists."""
    for line in (_read(*paths) or "").splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return _number(value.strip())
    return None


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


def jvm_base_mb(limit: int | None) -> int:
    """The model server's heap without bodies: JVM_BASE_MB, at most JVM_BASE_SHARE of a memory limit."""
    return JVM_BASE_MB if limit is None else max(64, min(JVM_BASE_MB, int(limit * JVM_BASE_SHARE) // MB))


def jvm_heap_mb(payload_bytes: int, calls: int) -> int:
    """The model server's -Xmx, in MB: its base heap (jvm_base_mb of this container's memory limit)
    plus JVM_BODY_COPIES of a full body for each of the `calls` it holds at once (the front sends
    one per worker), so no body within the limit runs it out of memory (Netty's direct buffers
    share this bound, -XX:MaxDirectMemorySize's default)."""
    return jvm_base_mb(memory_limit()) + calls * JVM_BODY_COPIES * -(-payload_bytes // MB)


@dataclass(frozen=True)
class Serverless:
    """How a serverless-sized container is sized: its memory limit and the vCPUs it implies."""

    memory_limit: int | None  # bytes; None: forced (BYOC_SERVERLESS=true) without a cgroup limit
    vcpus: int
    vcpus_from: str

    def describe(self) -> str:
        memory = f"memory limit {self.memory_limit // MB} MiB" if self.memory_limit else "no memory limit"
        threads = f"{self.vcpus} thread{'s' if self.vcpus > 1 else ''}"
        return f"serverless ({memory}): one worker, {threads} ({self.vcpus_from})"


def serverless(limit: int | None, quota: float | None, cores: int, forced: bool | None = None) -> Serverless | None:
    """The serverless sizing when the memory `limit` is serverless-sized (set, at most 6144 MiB) or
    `forced` (BYOC_SERVERLESS); None otherwise. vCPUs: the CPU `quota` where there is one (`cores`
    already counts it), else MB_PER_VCPU per vCPU of the limit, rounded, at least 1, at most `cores`."""
    sized = limit is not None and limit <= SERVERLESS_MAX_MEMORY
    if forced is False or not (sized or forced):
        return None
    if quota is not None or limit is None:
        return Serverless(limit, cores, f"cgroup CPU quota {quota:g}" if quota is not None else f"{cores} cores")
    vcpus = max(1, min(cores, int(limit / MB / MB_PER_VCPU + 0.5)))
    return Serverless(limit, vcpus, f"1 vCPU per {MB_PER_VCPU} MB, at most {cores} cores")


@dataclass(frozen=True)
class Plan:
    workers: int
    threads: int
    reason: str
    batch_size: int = CPU_BATCH_SIZE  # the front's cap on requests per forward pass


def batch_size(gpus: int, configured: int | None = None) -> int:
    """The front's batch cap: BYOC_BATCH_SIZE where set, else GPU_BATCH_SIZE with GPUs, CPU_BATCH_SIZE without."""
    return configured or (GPU_BATCH_SIZE if gpus else CPU_BATCH_SIZE)


def workers_per_gpu(cores: int, gpus: int) -> int:
    """Model workers per GPU: one core each, 1..MAX_WORKERS_PER_GPU. A worker decodes and transforms
    its batch on one CPU core, then waits for its forward pass on the GPU; with two or more per GPU,
    one worker's decoding overlaps another's forward pass, so the GPU is not idle while images are
    decoded. More workers than cores would only take turns on them."""
    return max(1, min(MAX_WORKERS_PER_GPU, cores // max(1, gpus)))


def plan(
    cores: int,
    gpus: int,
    model_bytes: int,
    memory: int,
    workers: int | None = None,
    threads: int | None = None,
    serverless: Serverless | None = None,
    configured_batch: int | None = None,
) -> Plan:
    """Workers from GPUs (workers_per_gpu each) or cores, capped by memory; threads per worker up to
    all the cores; the batch cap (`batch_size`, BYOC_BATCH_SIZE as `configured_batch`). Serverless:
    one worker with the vCPUs the memory implies (SAGEMAKER_MODEL_SERVER_WORKERS and
    BYOC_TORCH_THREADS still win)."""
    by_memory = max(1, int(memory * MEMORY_SHARE // worker_bytes(model_bytes)))
    default_threads = None
    if serverless is not None:
        cores = serverless.vcpus
    if workers is not None:
        reason = "SAGEMAKER_MODEL_SERVER_WORKERS" + (f"; {serverless.describe()}" if serverless else "")
    elif serverless is not None:
        # A second worker would only split the same one to three vCPUs, and hold a second copy of
        # the model in a memory that is small by design.
        workers, default_threads, reason = 1, serverless.vcpus, serverless.describe()
    elif gpus:
        per_gpu = workers_per_gpu(cores, gpus)
        workers = min(gpus * per_gpu, by_memory)
        reason = f"{per_gpu} per GPU ({gpus} GPUs, {cores} cores), memory allows {by_memory}"
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
    return Plan(workers=workers, threads=threads, reason=reason, batch_size=batch_size(gpus, configured_batch))
