"""Docker for the benchmarks: run a server container on the host network, time its cold
start, read its memory from its cgroup, and always remove it.

Every container the bench starts carries the label LABEL=RUN_ID. Each is removed when its
step ends; `cleaned_up` also removes, when the run ends, any of this run's that a stop left, and,
when it starts, those of earlier runs whose process is gone (killed outright, SIGKILL)."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path

CPUSET = "0-1"  # the same core budget for every server: the whole 2-core box
LABEL = "byoc-bench"
# This run's label value: its process id first, so that a later run can tell a live run's
# containers (left alone) from a dead one's (removed).
RUN_ID = f"{os.getpid()}-{uuid.uuid4().hex[:6]}"

log = logging.getLogger("bench")


def docker(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:3])}... failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")
    return proc


def image_exists(image: str) -> bool:
    return docker("image", "inspect", image, check=False).returncode == 0


def image_size(image: str) -> int | None:
    proc = docker("image", "inspect", "-f", "{{.Size}}", image, check=False)
    return int(proc.stdout.strip()) if proc.returncode == 0 else None


_handed_out: set[int] = set()


def free_port() -> int:
    """A free loopback port below 32768 (MMS and TorchServe refuse the ephemeral range), never
    the same twice in one run (a server given several must get distinct ones)."""
    for port in range(23000, 32000):
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise OSError("no free port in 23000-31999")


def http_status(url: str, timeout: float = 2.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def _labelled() -> list[str]:
    """docker run's options that mark a container as this run's."""
    return ["--label", f"{LABEL}={RUN_ID}"]


@contextmanager
def running(image: str, args: list[str], docker_opts: list[str], label: str):
    """`docker run -d` on the host network and the core budget; yields (name, start time); removes it."""
    name = f"byoc-bench-{label}-{uuid.uuid4().hex[:6]}"
    started = time.monotonic()
    try:  # `docker run` itself inside: a stop while it runs may still leave the container created
        docker(
            "run",
            "-d",
            "--name",
            name,
            *_labelled(),
            "--network",
            "host",
            "--cpuset-cpus",
            CPUSET,
            *docker_opts,
            image,
            *args,
        )
        yield name, started
    finally:
        docker("rm", "-f", name, check=False)


def run_once(
    image: str, args: list[str], docker_opts: list[str], label: str, timeout: float = 1800
) -> subprocess.CompletedProcess:
    """`docker run --rm` on the core budget, named so that it is removed even when interrupted."""
    name = f"byoc-bench-{label}-{uuid.uuid4().hex[:6]}"
    try:
        return docker(
            "run",
            "--rm",
            "--name",
            name,
            *_labelled(),
            "--cpuset-cpus",
            CPUSET,
            *docker_opts,
            image,
            *args,
            timeout=timeout,
            check=False,
        )
    finally:
        docker("rm", "-f", name, check=False)


def _labelled_containers(value: str = "") -> list[tuple[str, str, str]]:
    """(id, name, run id) of every container labelled LABEL (=`value` when given), running or not."""
    selector = f"{LABEL}={value}" if value else LABEL
    fmt = '{{.ID}}\t{{.Names}}\t{{.Label "' + LABEL + '"}}'
    proc = docker("ps", "-a", "--filter", f"label={selector}", "--format", fmt, check=False)
    if proc.returncode != 0:  # no Docker daemon: nothing can be left
        return []
    rows = [line.split("\t", 2) for line in proc.stdout.splitlines()]
    return [(cid, name, run) for cid, name, run in (r for r in rows if len(r) == 3)]


def _run_alive(run_id: str) -> bool:
    """Whether the bench run `run_id` (pid-hex) is still a live process on this machine."""
    pid = run_id.partition("-")[0]
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _remove(containers: list[tuple[str, str, str]]) -> list[str]:
    """`docker rm -f` them; their names."""
    if containers:
        docker("rm", "-f", *(cid for cid, _, _ in containers), check=False)
    return [name for _, name, _ in containers]


def remove_leftovers() -> list[str]:
    """Remove the containers of earlier bench runs whose process is gone (a run killed outright
    cannot remove its own); a run still going keeps its. The names removed."""
    return _remove([c for c in _labelled_containers() if c[2] != RUN_ID and not _run_alive(c[2])])


def remove_this_runs() -> list[str]:
    """Remove every container this run started that is still there; the names removed."""
    return _remove(_labelled_containers(RUN_ID))


@contextmanager
def cleaned_up():
    """Around a bench run: first remove earlier runs' leftovers (saying so), and at the end, however
    the run ends, every container of this run that its own step did not remove."""
    left = remove_leftovers()
    if left:
        log.info("removed %d container(s) left by earlier bench runs: %s", len(left), ", ".join(left))
    try:
        yield
    finally:
        left = remove_this_runs()
        if left:
            log.info("removed %d container(s) this run left: %s", len(left), ", ".join(left))


def wait_status(url: str, started: float, timeout: float, name: str) -> float:
    """Seconds from `started` until `url` answers 200; raises with the container's log tail on timeout."""
    while time.monotonic() - started < timeout:
        if http_status(url) == 200:
            return time.monotonic() - started
        state = docker("inspect", "-f", "{{.State.Running}}", name, check=False).stdout.strip()
        if state == "false":
            break
        time.sleep(0.1)
    logs = docker("logs", "--tail", "30", name, check=False)
    raise RuntimeError(f"{name}: {url} not 200 after {time.monotonic() - started:.0f} s\n{logs.stdout}{logs.stderr}")


def _pss_bytes(pid: str) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(name: str) -> float | None:
    """CPU time the container's processes have used so far (cgroup v1 cpuacct or v2 cpu.stat)."""
    cid = docker("inspect", "-f", "{{.Id}}", name).stdout.strip()
    for path in (
        f"/sys/fs/cgroup/cpuacct/docker/{cid}/cpuacct.usage",
        f"/sys/fs/cgroup/cpu,cpuacct/docker/{cid}/cpuacct.usage",
    ):
        if Path(path).is_file():
            return int(Path(path).read_text()) / 1e9
    for path in (f"/sys/fs/cgroup/system.slice/docker-{cid}.scope/cpu.stat", f"/sys/fs/cgroup/docker/{cid}/cpu.stat"):
        if Path(path).is_file():
            stat = dict(line.split() for line in Path(path).read_text().splitlines())
            return int(stat["usage_usec"]) / 1e6
    return None


UNITS = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "kB": 1e3, "MB": 1e6, "GB": 1e9}


def parse_size(text: str) -> float:
    """`123.4MiB` -> bytes (the units `docker stats` prints)."""
    text = text.strip()
    for unit in sorted(UNITS, key=len, reverse=True):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * UNITS[unit]
    return float(text)


def is_worker(comm: str, cmd: str, worker_marker: str) -> bool:
    """Whether a process (its name and command line) is a model worker: a Python process whose command
    line names `worker_marker` (MMS's and TorchServe's workers), one whose title starts with it (Ray's
    replicas name themselves `ray::ServeReplica:...`), or one that took it as its name (the LitServe peer's
    workers, whose command line is multiprocessing's)."""
    if comm == worker_marker or cmd.startswith(worker_marker):
        return True
    return worker_marker in cmd and Path(cmd.split(" ", 1)[0]).name.startswith("python")


def memory(name: str, worker_marker: str) -> dict:
    """The container's memory as `docker stats` shows it (cgroup v1 or v2) and each worker process's PSS."""
    usage = docker("stats", "--no-stream", "--format", "{{.MemUsage}}", name).stdout.split("/")[0]
    workers, others = [], 0
    for line in docker("top", name, "-eo", "pid,comm,args").stdout.splitlines()[1:]:
        pid, comm, cmd = (line.strip().split(None, 2) + ["", ""])[:3]
        try:
            pss = _pss_bytes(pid)
        except OSError:  # the process ended meanwhile
            continue
        if is_worker(comm, cmd.strip(), worker_marker):
            workers.append(pss)
        else:
            others += pss
    return {
        "container_mb": round(parse_size(usage) / 2**20),
        "workers": len(workers),
        "worker_pss_mb": [round(w / 2**20) for w in workers],
        "other_pss_mb": round(others / 2**20),
    }
