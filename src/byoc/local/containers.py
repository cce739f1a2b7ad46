"""The Docker SDK side of `byoc local`: the engine, images, GPUs, /dev/shm, the network mode,
running containers, following their logs with a host prefix, and Ctrl-C turned into SIGTERM.

Nothing here knows about training or serving. Problems a user can fix are ByocErrors whose
message names the command that fixes them. The SDK is imported inside the functions: the
images install byoc without it, and `byoc demo-data` must still load there.
"""

from __future__ import annotations

import enum
import glob
import os
import re
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from byoc.core.errors import ByocError, ConfigError

if TYPE_CHECKING:
    from docker.client import DockerClient
    from docker.models.containers import Container

GiB = 1 << 30
LABEL = "byoc.local"  # every container and network `byoc local` starts carries it, valued with its job
ENSURE_DOCKER = "scripts/ensure_docker.sh (or: sudo systemctl start docker)"
# What a server that lost its port says (Python, Java), and what the engine says when publishing fails.
PORT_TAKEN = re.compile(r"address already in use|EADDRINUSE|BindException|port is already allocated", re.IGNORECASE)


class EngineError(ByocError):
    """No Docker engine answers, or it refused a request."""


class PortInUse(ByocError):
    """The port asked for is taken on this machine."""


def engine() -> DockerClient:
    """A client of the engine DOCKER_HOST names (or the default socket) that has answered a ping."""
    import docker.errors

    where = os.environ.get("DOCKER_HOST") or "the default socket"
    try:
        client = docker.client.from_env(timeout=120)
        client.ping()
    except docker.errors.DockerException as exc:
        raise EngineError(
            f"no Docker engine answers at {where} ({_first_line(exc)}): start one with {ENSURE_DOCKER}"
        ) from None
    return client


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def build_command(image: str) -> str:
    """The command that builds one of byoc's images."""
    if image.startswith("byoc-serve") and image.endswith(":cpu"):
        return "scripts/build_images.sh cpu"
    if image.startswith("byoc-serve"):
        return "scripts/build_images.sh serve"
    if image.startswith("byoc-train"):
        return "scripts/build_images.sh train"
    return f"docker build -t {image} ... (or scripts/build_images.sh all)"


def require_image(client: DockerClient, image: str) -> None:
    import docker.errors

    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        raise ByocError(f"image {image} not found: build it with {build_command(image)}") from None


# ---- GPUs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gpus:
    """What `--gpus` resolved to: the device requests a container gets, and one line for the user."""

    requests: list[Any]
    description: str


def parse_gpus(text: str) -> str:
    """`--gpus`: auto, all, none or device indices (0,1)."""
    value = text.strip().lower()
    if value in ("auto", "all", "none") or re.fullmatch(r"\d+(,\d+)*", value):
        return value
    raise ConfigError(f"--gpus {text!r}: use auto, all, none or device indices such as 0,1")


def host_gpu_devices() -> list[str]:
    """The NVIDIA device nodes of this machine (/dev/nvidia0, ...)."""
    return sorted(glob.glob("/dev/nvidia[0-9]*"))


def resolve_gpus(client: DockerClient, choice: str, devices: list[str] | None = None) -> Gpus:
    """Device requests for `choice`. `auto` passes every GPU only when the engine can (the NVIDIA
    runtime) and the machine has some; otherwise it says why the run is on the CPU."""
    from docker.types import DeviceRequest

    if choice == "none":
        return Gpus([], "GPUs: none (--gpus none): running on the CPU")
    runtimes = sorted(client.info().get("Runtimes") or {})
    nvidia = "nvidia" in runtimes or shutil.which("nvidia-container-runtime-hook") is not None
    devices = host_gpu_devices() if devices is None else devices
    if choice == "auto":
        if not nvidia:
            return Gpus([], f"GPUs: the engine has no NVIDIA runtime (runtimes: {', '.join(runtimes)}): on the CPU")
        if not devices:
            return Gpus([], "GPUs: none found on this machine (no /dev/nvidia*): running on the CPU")
        return Gpus([DeviceRequest(count=-1, capabilities=[["gpu"]])], f"GPUs: all {len(devices)} (--gpus auto)")
    if not nvidia:
        raise ConfigError(
            f"--gpus {choice} needs the NVIDIA container runtime, and the engine has only {', '.join(runtimes)}: "
            "install nvidia-container-toolkit, or use --gpus none"
        )
    if choice == "all":
        return Gpus([DeviceRequest(count=-1, capabilities=[["gpu"]])], "GPUs: all (--gpus all)")
    ids = choice.split(",")
    return Gpus([DeviceRequest(device_ids=ids, capabilities=[["gpu"]])], f"GPUs: {choice} (--gpus {choice})")


def split_gpus(gpus: Gpus, hosts: int, devices: list[str] | None = None) -> list[Gpus]:
    """Each host's share of `gpus` when `hosts` containers share this machine: disjoint, equal
    shares (a GPU in two containers would run two hosts' ranks on one device, each host counting it
    as its own), or a one-line error when there are fewer GPUs than hosts."""
    if hosts == 1 or not gpus.requests:
        return [gpus] * hosts
    from docker.types import DeviceRequest

    ids = list(gpus.requests[0].get("DeviceIDs") or [])
    if not ids:  # every GPU of the machine: its device nodes name them
        ids = [d.removeprefix("/dev/nvidia") for d in (host_gpu_devices() if devices is None else devices)]
    share = len(ids) // hosts
    if share == 0:
        raise ConfigError(
            f"--hosts {hosts} on {len(ids)} GPU(s): each host needs a GPU of its own; "
            f"use --hosts {len(ids)} or fewer, or --gpus none"
        )
    parts = [ids[i * share : (i + 1) * share] for i in range(hosts)]
    return [Gpus([DeviceRequest(device_ids=p, capabilities=[["gpu"]])], f"GPUs {','.join(p)}") for p in parts]


# ---- shared memory, network ------------------------------------------------------------------


def parse_size(text: str) -> str:
    """`--shm-size`: a size as Docker reads it (512m, 8g)."""
    if not re.fullmatch(r"\d+[bkmg]?", text.strip().lower()):
        raise ConfigError(f"--shm-size {text!r}: use a size such as 512m or 8g")
    return text.strip().lower()


def shm_size(client: DockerClient, containers: int) -> int:
    """/dev/shm for each of `containers` sharing this machine: a quarter of its memory between
    them, at least 1 GiB. Docker's 64 MB default makes data-loader workers die with a bus error."""
    total = int(client.info().get("MemTotal") or 0)
    return max(GiB, total // (4 * max(containers, 1)))


class Network(str, enum.Enum):
    """How the containers reach each other. `bridge`: a network of their own, where every host
    name resolves, as on SageMaker. `host`: the machine's network, every host name 127.0.0.1
    (engines without a bridge, such as dockerd --bridge=none). `none`: no network (one host)."""

    AUTO = "auto"
    BRIDGE = "bridge"
    HOST = "host"
    NONE = "none"


def resolve_network(client: DockerClient, choice: Network) -> Network:
    """`auto`: bridge when the engine has its default bridge network, host when it has none."""
    import docker.errors

    if choice is not Network.AUTO:
        return choice
    try:
        client.networks.get("bridge")
    except docker.errors.NotFound:
        return Network.HOST
    return Network.BRIDGE


@contextmanager
def job_network(client: DockerClient, mode: Network, name: str) -> Iterator[str | None]:
    """A user-defined bridge network for one job (bridge mode), removed afterwards; None otherwise."""
    if mode is not Network.BRIDGE:
        yield None
        return
    network = client.networks.create(name, driver="bridge", labels={LABEL: name})
    try:
        yield network.name
    finally:
        network.remove()


def check_port_free(port: int) -> None:
    """PortInUse when something on this machine already listens on 127.0.0.1:`port` (0: any port)."""
    if port == 0:
        return
    with socket.socket() as s:
        # As the server binds it (byoc.serve.front.Front: socketserver with allow_reuse_address sets
        # SO_REUSEADDR before bind): a port whose last connections wait out TIME_WAIT after a stop is
        # free to it, and so to this check; a port something listens on is not, either way.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            raise PortInUse(
                f"port {port} is in use on 127.0.0.1: choose another with --port (0: any free port)"
            ) from None


# ---- running containers ----------------------------------------------------------------------


def start(client: DockerClient, image: str, command: list[str], **options: Any) -> Container:
    """`docker run -d`: the container, started; the engine's refusals as ByocErrors."""
    import docker.errors

    try:
        return client.containers.run(image, command, detach=True, **options)
    except docker.errors.ImageNotFound:
        raise ByocError(f"image {image} not found: build it with {build_command(image)}") from None
    except docker.errors.APIError as exc:
        message = str(exc.explanation or exc)
        if PORT_TAKEN.search(message):
            raise PortInUse(f"the port is in use on this machine ({message}): choose another with --port") from None
        raise EngineError(f"the engine refused to start {image}: {message}") from None


def exit_code(container: Container) -> int | None:
    """The container's exit code once it has stopped, else None."""
    container.reload()
    if container.status in ("exited", "dead"):
        return int(container.attrs["State"]["ExitCode"])
    return None


def remove(container: Container) -> None:
    """Remove the container, whatever state it is in (it may already be gone)."""
    import docker.errors

    with suppress(docker.errors.NotFound):
        container.remove(force=True)


def text_logs(container: Container, tail: int | str = "all") -> str:
    """The container's log, stdout and stderr together."""
    return container.logs(stdout=True, stderr=True, tail=tail).decode(errors="replace")


@dataclass
class LogFollower:
    """Follows containers' logs in threads and prints each line behind its prefix (`algo-1 | ...`).
    Lines are kept too, so callers can look for a line (the server's `ready`) without a second read."""

    out: IO[str] = field(default_factory=lambda: sys.stdout)
    lines: dict[str, list[str]] = field(default_factory=dict)
    quiet: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)
    _seen: threading.Condition = field(default_factory=threading.Condition)

    def follow(self, container: Container, prefix: str) -> None:
        self.lines.setdefault(prefix, [])
        thread = threading.Thread(target=self._pump, args=(container, prefix), name=f"logs-{prefix}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _pump(self, container: Container, prefix: str) -> None:
        pending = b""
        for chunk in container.logs(stream=True, follow=True, stdout=True, stderr=True):
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for raw in complete:
                self._emit(prefix, raw.decode(errors="replace").rstrip("\r"))
        if pending:
            self._emit(prefix, pending.decode(errors="replace"))

    def _emit(self, prefix: str, line: str) -> None:
        with self._seen:
            self.lines[prefix].append(line)
            self._seen.notify_all()
        if not self.quiet:
            with self._lock:
                print(f"{prefix} | {line}", file=self.out, flush=True)

    def wait_for(self, prefix: str, test: Callable[[str], bool], timeout: float, alive: Callable[[], bool]) -> str:
        """The first line of `prefix` for which `test` holds; TimeoutError after `timeout`, and
        ByocError when `alive()` turns false before such a line came."""
        deadline = time.monotonic() + timeout
        checked = 0
        with self._seen:
            while True:
                lines = self.lines.get(prefix, [])
                for line in lines[checked:]:
                    if test(line):
                        return line
                checked = len(lines)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{prefix}: no such line within {timeout:g} s")
                if not self._seen.wait(timeout=0.5) and not alive():
                    self._seen.wait(timeout=1.0)  # the log's last lines may still be on their way
                    if not any(test(line) for line in self.lines.get(prefix, [])[checked:]):
                        raise ByocError(f"{prefix} exited")

    def join(self, timeout: float = 10) -> None:
        for thread in self._threads:
            thread.join(timeout)


@contextmanager
def signals_forwarded(on_signal: Callable[[int, int], None]) -> Iterator[None]:
    """While the block runs, SIGINT (Ctrl-C) and SIGTERM to this process call `on_signal(signum,
    count)` instead of stopping it: the caller passes them on to its containers and keeps waiting,
    so they can save their work and the job's real exit code is still reported."""
    count = 0

    def handler(signum: int, _frame: object) -> None:
        nonlocal count
        count += 1
        on_signal(signum, count)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def remove_tree(client: DockerClient, image: str, path: Path) -> None:
    """Delete `path`. Containers write as root: when this user may not delete their files, a
    container of `image` (which has `rm`) does it."""
    if not path.exists():
        return
    try:
        shutil.rmtree(path)
    except PermissionError:
        parent = path.resolve().parent
        client.containers.run(
            image,
            ["-rf", f"/work/{path.name}"],
            entrypoint=["rm"],
            network_mode="none",
            volumes={str(parent): {"bind": "/work", "mode": "rw"}},
            remove=True,
        )
