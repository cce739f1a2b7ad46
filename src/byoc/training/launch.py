"""The `train` entry (sagemaker-training's SAGEMAKER_TRAINING_MODULE): one process,
or torchrun across hosts and GPUs.

sagemaker-training's `train` imports this module and calls `main()`; a
`ClientError` raised here becomes SageMaker's failure file and exit code 1: `end` is the one
place a job's outcome becomes the process's.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NoReturn

from sagemaker_training import errors

from byoc.core import gpu_guard
from byoc.core.errors import ByocError, ConfigError
from byoc.training import contract
from byoc.training.contract import EXIT_STOPPED, Job, TrainConfig

log = logging.getLogger("byoc.training.launch")

HOST_WAIT_SECONDS = 900  # SageMaker: every host name resolves, but possibly only after a while
GRACE_SECONDS = 110  # SageMaker kills 120 s after SIGTERM
EFA_TYPES = ("ml.p4d", "ml.p4de", "ml.p5", "ml.p6", "ml.trn1")  # instance types with Elastic Fabric Adapter


class TrainingFailed(errors.ClientError):
    """Message goes verbatim to /opt/ml/output/failure."""


def procs_per_host(job: Job, cfg: TrainConfig) -> int:
    return cfg.processes_per_host or max(1, job.num_gpus)


def check_processes(job: Job, cfg: TrainConfig, facts: gpu_guard.Facts) -> None:
    """Each training process on a GPU host needs a GPU of its own (one process per GPU, each on the
    device of its local rank), and torch must see the GPUs the process count was taken from."""
    gpus = max(job.num_gpus, facts.torch_device_count)
    if gpus and procs_per_host(job, cfg) > gpus:
        raise ConfigError(
            f"processes-per-host {cfg.processes_per_host} is more than this host's {gpus} GPU(s): "
            f"use {gpus} or fewer (0: one per GPU)"
        )


def torchrun_command(job: Job, cfg: TrainConfig, argv: list[str]) -> list[str]:
    """torchrun for this host: nnodes = hosts, node_rank = index in sorted hosts, master = first host."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nnodes={len(job.hosts)}",
        f"--nproc_per_node={procs_per_host(job, cfg)}",
        f"--node_rank={job.node_rank}",
        f"--master_addr={job.master_host}",
        f"--master_port={contract.MASTER_PORT}",
        "--max_restarts=0",
        "-m",
        "byoc.training.train",
        *argv,
    ]
    return cmd


def distributed_env(job: Job, cfg: TrainConfig) -> dict[str, str]:
    env = dict(os.environ)
    # Bind gloo / NCCL to the interface SageMaker names (eth0 there, lo in local tests).
    env.setdefault("NCCL_SOCKET_IFNAME", job.network_interface)
    env.setdefault("GLOO_SOCKET_IFNAME", job.network_interface)
    env.setdefault("OMP_NUM_THREADS", str(max(1, job.num_cpus // procs_per_host(job, cfg))))
    return env


def network_note(job: Job) -> str | None:
    """What NCCL uses between the hosts of a multi-host job on an EFA instance type, or None. NCCL reaches EFA
    only through the aws-ofi-nccl plugin over libfabric (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/efa-start-nccl.html),
    and the training image carries neither: setting FI_PROVIDER=efa would change nothing, so NCCL's own
    sockets (TCP over NCCL_SOCKET_IFNAME) carry the traffic, and the log says so."""
    if len(job.hosts) < 2 or not job.instance_type.startswith(EFA_TYPES):
        return None
    return (
        f"{job.instance_type} has EFA, but the training image has no libfabric / aws-ofi-nccl: NCCL talks TCP "
        f"between hosts over {job.network_interface} (docs/gpu.md)"
    )


def wait_for_hosts(hosts: list[str], timeout: float = HOST_WAIT_SECONDS) -> None:
    """Every host name must resolve before torchrun's rendezvous (SageMaker's DNS comes up late)."""
    deadline = time.monotonic() + timeout
    for host in hosts:
        while True:
            try:
                socket.gethostbyname(host)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TrainingFailed(
                        f"host {host} did not resolve within {timeout:.0f}s: the cluster's network is not up"
                    ) from None
                time.sleep(1)


def run_torchrun(job: Job, cfg: TrainConfig, argv: list[str]) -> tuple[int, str | None]:
    """torchrun on this host, signals forwarded; (its exit code, the first failing worker's reason)."""
    wait_for_hosts(job.hosts)
    note = network_note(job)
    if note:
        log.warning(note)
    cmd = torchrun_command(job, cfg, argv)
    log.info("launching: %s", " ".join(cmd))
    with tempfile.TemporaryDirectory(prefix="byoc-launch-") as tmp:
        reason_file = Path(tmp) / "reason"
        proc = subprocess.Popen(cmd, env={**distributed_env(job, cfg), contract.REASON_ENV: str(reason_file)})

        def forward(signum, frame):
            log.warning("received signal %d: forwarding to the training processes", signum)
            proc.send_signal(signum)

        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGINT, forward)
        code = proc.wait()
        reason = contract.handed_over(reason_file)
    if code not in (0, EXIT_STOPPED) and reason is None:
        reason = f"distributed training failed (torchrun exit code {code}); see the log of every host"
    return code, reason


def stopped() -> NoReturn:
    """Exit as a stopped job: at once, so that sagemaker-training reports neither success nor failure."""
    logging.shutdown()
    os._exit(EXIT_STOPPED)


def end(code: int, reason: str | None) -> None:
    """The one place a job's end becomes the process's: a stop exits EXIT_STOPPED; a failure raises
    TrainingFailed, which sagemaker-training writes to the failure file (its only writer) and turns
    into exit code 1; success returns."""
    if code in (EXIT_STOPPED, -signal.SIGTERM):
        stopped()
    if code != 0:
        raise TrainingFailed(reason or f"training exited with code {code}")


def main() -> None:
    """Framework entry point called by sagemaker-training's `train`."""
    from byoc.training import train as trainer

    trainer.configure_logging()
    # Until the loop installs its checkpointing handler, a stop request just ends the job
    # (PID 1 ignores SIGTERM without a handler, and SageMaker would wait 120 s to SIGKILL).
    signal.signal(signal.SIGTERM, lambda signum, frame: stopped())
    argv = sys.argv[1:]
    try:
        job, cfg = contract.load(argv)
        check_processes(job, cfg, gpu_guard.require())
    except ByocError as exc:
        end(*trainer.outcome(exc))
        return
    world = len(job.hosts) * procs_per_host(job, cfg)
    log.info(
        "byoc training: hosts=%s current_host=%s gpus=%d cpus=%d world_size=%d\nconfig: %s",
        job.hosts,
        job.current_host,
        job.num_gpus,
        job.num_cpus,
        world,
        cfg.to_dict(),
    )
    if world == 1:
        end(*trainer.run_reported(job, cfg))
    else:
        end(*run_torchrun(job, cfg, argv))
