"""multi-model-server's reach: the sockets it listens on, the management requests nobody but `serve`
may make, and a canary server that a model server told to fetch a model would call (a fixture)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from byoc.serve.mms import MODEL_NAME


def listening_sockets(pgid: int | None = None) -> dict:
    """The listening TCP ports and Unix socket paths of the processes in process group `pgid`
    (all processes when None) as {"tcp": [[port, pid, cmd], ...], "unix": [[path, pid, cmd], ...]};
    a Unix socket whose file was removed is still listed by its path. Standard library only:
    tests/test_serve_container_mms.py runs this function's source inside the serving image."""
    import os
    import re
    from pathlib import Path

    owners = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            if pgid is not None and int(fields[2]) != pgid:
                continue
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            for fd in os.listdir(f"/proc/{pid}/fd"):
                found = re.fullmatch(r"socket:\[(\d+)\]", os.readlink(f"/proc/{pid}/fd/{fd}"))
                if found:
                    owners[found[1]] = (int(pid), cmd)
        except OSError:  # gone, or not ours to read
            continue
    tcp = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in owners:  # 0A: LISTEN
                tcp.append([int(cols[1].rsplit(":", 1)[1], 16), *owners[cols[9]]])
    unix = []
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        cols = line.split()
        if len(cols) > 7 and int(cols[3], 16) & 0x10000 and cols[6] in owners:  # __SO_ACCEPTCON: listening
            unix.append([cols[7], *owners[cols[6]]])
    return {"tcp": tcp, "unix": unix}


# What a process that reaches MMS's management API would ask: fetch and run a model from a URL or a
# path outside the model store, remove the served model, scale it to no workers.
HOSTILE = [
    ("POST", "/models?url=http://127.0.0.1:1/x.mar&model_name=evil&initial_workers=1&synchronous=true"),
    ("POST", "/models?url={canary}/x.mar&model_name=evil2&initial_workers=1&synchronous=true"),
    ("POST", "/models?url=/etc&model_name=evil3"),
    ("DELETE", f"/models/{MODEL_NAME}"),
    ("PUT", f"/models/{MODEL_NAME}?min_worker=0&max_worker=0&synchronous=true"),
]


@pytest.fixture
def canary() -> Iterator[dict]:
    """A loopback HTTP server that counts the requests it gets: a model server told to fetch a
    model from it would show up here."""
    hits: list[str] = []

    class Count(BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            self.send_error(404)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Count)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield {"url": f"http://127.0.0.1:{server.server_address[1]}", "hits": hits}
    server.shutdown()
    server.server_close()
