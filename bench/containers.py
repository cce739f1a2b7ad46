"""Docker for the benchmarks: run a server container on the host network, time its cold
start, read its memory from its cgroup, and always remove it."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path

CPUSET = "0-1"  # the same core budget for every server: the whole 2-core box


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


@contextmanager
def running(image: str, args: list[str], docker_opts: list[str], label: str):
    """`docker run -d` on the host network and the core budget; yields (name, start time); removes it."""
    name = f"byoc-bench-{label}-{uuid.uuid4().hex[:6]}"
    started = time.monotonic()
    docker("run", "-d", "--name", name, "--network", "host", "--cpuset-cpus", CPUSET, *docker_opts, image, *args)
    try:
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


def memory(name: str, worker_marker: str) -> dict:
    """The container's memory as `docker stats` shows it (cgroup v1 or v2) and each worker process's PSS."""
    usage = docker("stats", "--no-stream", "--format", "{{.MemUsage}}", name).stdout.split("/")[0]
    workers, others = [], 0
    for line in docker("top", name, "-eo", "pid,args").stdout.splitlines()[1:]:
        pid, _, cmd = line.strip().partition(" ")
        cmd = cmd.strip()
        try:
            pss = _pss_bytes(pid)
        except OSError:  # the process ended meanwhile
            continue
        if worker_marker in cmd and Path(cmd.split(" ", 1)[0]).name.startswith("python"):
            workers.append(pss)
        else:
            others += pss
    return {
        "container_mb": round(parse_size(usage) / 2**20),
        "workers": len(workers),
        "worker_pss_mb": [round(w / 2**20) for w in workers],
        "other_pss_mb": round(others / 2**20),
    }
