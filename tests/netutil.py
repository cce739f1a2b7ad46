"""Ports, sockets and child-process output for tests, without races.

A server this test suite starts binds port 0 itself and says which port it got (in-process:
`server.server_address[1]`; a child process: its ready line, read with `Output.wait_for`).
Only servers that cannot do that (the serving image, multi-model-server, TorchServe on
`--network host`, where Docker cannot publish a port it chose) are handed a port, through
`on_free_port`, which starts them again when another process took the port first.
"""

from __future__ import annotations

import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, TypeVar

T = TypeVar("T")

# What a server that lost its port says: Python (errno 98), Go (the registry) and Java (TorchServe, MMS).
PORT_TAKEN = re.compile(r"address already in use|EADDRINUSE|BindException", re.IGNORECASE)


class PortTaken(Exception):
    """A server could not bind the port it was handed: another process took it first."""


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports the OS just handed out and released. Racy on its own:
    another process may bind one before the server does; use them through `on_free_port`."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in socks:  # all held until the last is chosen, so they are distinct
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def free_port() -> int:
    """One port as `free_ports` gives them (racy on its own: see `on_free_port`)."""
    return free_ports(1)[0]


def on_free_port(start: Callable[[list[int]], T], count: int = 1, attempts: int = 5) -> T:
    """`start(ports)` for a server that must be told its ports, retried with new ones while it raises
    PortTaken. The ports are found free and released before the server binds them, so another process
    can take one in between; `start` detects that from the server's own log or exit (never from
    whoever answers on the port) and raises PortTaken, and the retry closes the race."""
    problems = []
    for _ in range(attempts):
        try:
            return start(free_ports(count))
        except PortTaken as exc:
            problems.append(str(exc))
    raise AssertionError(f"{attempts} attempts in a row lost their port to another process: {problems}")


def raise_if_port_taken(log: str, what: str) -> None:
    if PORT_TAKEN.search(log):
        raise PortTaken(f"{what}: {PORT_TAKEN.search(log)[0]}")


@contextmanager
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections while the block runs: bound and never listening,
    so no other process can take it (unlike a port found free and released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


class Output:
    """A child process's text output, read line by line in a thread (so its pipe never fills and
    blocks it), and searchable while it runs."""

    def __init__(self, stream: IO[str]):
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._ended = False
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def text(self) -> str:
        with self._changed:
            return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 60) -> re.Match:
        """The first match of `pattern` in a line; AssertionError when the output ends first or
        `timeout` passes."""
        regex, deadline, seen = re.compile(pattern), time.monotonic() + timeout, 0
        with self._changed:
            while True:
                for line in self.lines[seen:]:
                    if match := regex.search(line):
                        return match
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if self._ended or left <= 0:
                    why = "the output ended" if self._ended else f"{timeout:g} s passed"
                    tail = "".join(self.lines[-30:])
                    raise AssertionError(f"{why} before a line matched {pattern!r}:\n{tail}")
                self._changed.wait(left)


def _address(field: str) -> tuple[str, int]:
    ip, port = field.split(":")
    return socket.inet_ntoa(struct.pack("=I", int(ip, 16))), int(port, 16)


def _queues(local: tuple[str, int], remote: tuple[str, int]) -> tuple[int, int] | None:
    """(bytes not yet acknowledged, bytes not yet read) of this host's IPv4 TCP socket local -> remote."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if _address(fields[1]) == local and _address(fields[2]) == remote:
            tx, rx = fields[4].split(":")
            return int(tx, 16), int(rx, 16)
    return None


def wait_until_read(sock: socket.socket, timeout: float = 30) -> None:
    """Wait until the server at the other end of `sock`, on this host's network (a process or a
    `--network host` container), has read everything sent on it: nothing unacknowledged on our side,
    nothing unread on its side. Linux only (/proc/net/tcp), IPv4."""
    me, peer = sock.getsockname()[:2], sock.getpeername()[:2]
    deadline = time.monotonic() + timeout
    while True:
        ours, theirs = _queues(me, peer), _queues(peer, me)
        if ours is not None and theirs is not None and ours[0] == 0 and theirs[1] == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{peer} did not read the request within {timeout:g} s (queues: {ours}, {theirs})")
        time.sleep(0.01)


@contextmanager
def local_runtime(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> Iterator[tuple[str, Output]]:
    """`byoc local-runtime --port 0 ARGS` in its own process (the real command): yields its URL, read
    from the line it prints once listening, and its output; stopped on the way out (its output is
    printed when the body failed, for the test's report)."""
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "byoc.cli", "local-runtime", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    output = Output(proc.stdout)  # type: ignore[arg-type]  # stdout=PIPE
    try:
        yield (
            output.wait_for(r"export AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME=(http://127\.0\.0\.1:\d+)$", timeout)[1],
            output,
        )
    except BaseException:
        print(output.text()[-4000:])
        raise
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def http_server(handler: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, str]:
    """A threaded HTTP server for `handler` on a free loopback port, serving in a daemon thread: (server, URL)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"
