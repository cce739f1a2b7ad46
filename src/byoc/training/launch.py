"""The `train` entry (sagemaker-training's SAGEMAKER_TRAINING_MODULE): one process,
or torchrun across hosts and GPUs.

sagemaker-training's `train` imports this module and calls `main()`; a
`ClientError` raised here becomes SageMaker's failure file and exit code 1.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time

from sagemaker_training import errors

from byoc.training import contract
from byoc.training.contract import Job, TrainConfig
from byoc.core.errors import ByocError

log = logging.getLogger("byoc.training.launch")

HOST_WAIT_SECONDS = 900  # SageMaker: every host name resolves, but possibly only after a while
GRACE_SECONDS = 110  # SageMaker kills 120 s after SIGTERM


class TrainingFailed(errors.ClientError):
    """Message goes verbatim to /opt/ml/output/failure."""


def procs_per_host(job: Job, cfg: TrainConfig) -> int:
    return cfg.processes_per_host or max(1, job.num_gpus)


def torchrun_command(job: Job, cfg: TrainConfig, argv: list[str]) -> list[str]:
    """torchrun for this host: nnodes = hosts, node_rank = index in sorted hosts, master = first host."""
    cmd = [
        sys.executable, "-m", "torch.distributed.run",
        f"--nnodes={len(job.hosts)}",
        f"--nproc_per_node={procs_per_host(job, cfg)}",
        f"--node_rank={job.node_rank}",
        f"--master_addr={job.master_host}",
        f"--master_port={contract.MASTER_PORT}",
        "--max_restarts=0",
        "-m", "byoc.training.train", *argv,
    ]
    return cmd


def distributed_env(job: Job, cfg: TrainConfig) -> dict[str, str]:
    env = dict(os.environ)
    # Bind gloo / NCCL to the interface SageMaker names (eth0 there, lo in local tests).
    env.setdefault("NCCL_SOCKET_IFNAME", job.network_interface)
    env.setdefault("GLOO_SOCKET_IFNAME", job.network_interface)
    env.setdefault("OMP_NUM_THREADS", str(max(1, job.num_cpus // procs_per_host(job, cfg))))
    if job.instance_type.startswith(("ml.p4d", "ml.p4de", "ml.p5", "ml.trn1")):
        env.setdefault("FI_PROVIDER", "efa")  # EFA instances: libfabric's EFA provider for NCCL
        env.setdefault("FI_EFA_USE_DEVICE_RDMA", "1")
        env.setdefault("RDMAV_FORK_SAFE", "1")
    return env


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
                    raise TrainingFailed(f"host {host} did not resolve within {timeout:.0f}s: the cluster's network is not up")
                time.sleep(1)


def run_torchrun(job: Job, cfg: TrainConfig, argv: list[str]) -> int:
    wait_for_hosts(job.hosts)
    cmd = torchrun_command(job, cfg, argv)
    log.info("launching: %s", " ".join(cmd))
    proc = subprocess.Popen(cmd, env=distributed_env(job, cfg))

    def forward(signum, frame):
        log.warning("received signal %d: forwarding to the training processes", signum)
        proc.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    return proc.wait()


def main() -> None:
    """Framework entry point called by sagemaker-training's `train`."""
    from byoc.training.train import configure_logging
    from byoc.training import train as trainer

    configure_logging()
    # Until the loop installs its checkpointing handler, a stop request just ends the job
    # (PID 1 ignores SIGTERM without a handler, and SageMaker would wait 120 s to SIGKILL).
    signal.signal(signal.SIGTERM, lambda signum, frame: os._exit(143))
    argv = sys.argv[1:]
    try:
        job, cfg = contract.load(argv)
    except ByocError as exc:
        raise TrainingFailed(f"{type(exc).__name__}: {exc}") from None
    world = len(job.hosts) * procs_per_host(job, cfg)
    log.info("byoc training: hosts=%s current_host=%s gpus=%d cpus=%d world_size=%d\nconfig: %s",
             job.hosts, job.current_host, job.num_gpus, job.num_cpus, world, cfg.to_dict())
    if world == 1:
        code = trainer.main(argv)
    else:
        code = run_torchrun(job, cfg, argv)
        if code not in (0, 143) and not job.failure_file.exists():
            contract.write_failure(job, f"distributed training failed (torchrun exit code {code}); see the log of every host")
    if code == 143 or code == -signal.SIGTERM:
        # Stopped (spot interruption / StopTrainingJob), not failed: the checkpoint is saved.
        logging.shutdown()
        os._exit(143)
    if code != 0:
        reason = job.failure_file.read_text()[:1024] if job.failure_file.exists() else f"exit code {code}"
        raise TrainingFailed(reason)
