"""What each layer of a served request costs, in latency and in CPU.

`python -m bench.layers` starts each serving image with the bench's model (as `make bench` does)
and, inside the running container (`docker exec`, bench/ mounted), sends the same photo three ways
in interleaved rounds at concurrency 1, each on a kept-alive connection:

- whole: the public port (the front, the model server, a model worker, the handler);
- model server: multi-model-server's inference socket, as the front calls it (no front);
- handler: byoc's handler in the measuring process (no HTTP at all; images with torch only).

Wall time is the median per request; CPU per request is the container's (its cgroup) less the
measuring process's own for the served paths, and the measuring process's for the handler. The
differences are what the front and the model server's hop cost. Prints a table and writes
bench/results/layers.json (`--out`).
"""

from __future__ import annotations

import argparse
import glob
import http.client
import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger("bench.layers")
REPO = Path(__file__).resolve().parents[1]
IMAGES = {"byoc": "byoc-serve:latest", "byoc-cpu": "byoc-serve:cpu"}
HEADERS = {"Content-Type": "image/jpeg", "Accept": "application/json"}
CGROUP_CPU = (  # the container's own CPU time, seen from inside it
    ("/sys/fs/cgroup/cpuacct/cpuacct.usage", 1e9),
    ("/sys/fs/cgroup/cpu,cpuacct/cpuacct.usage", 1e9),
    ("/sys/fs/cgroup/cpu.stat", 1e6),
)


# ---- inside the container


def container_cpu() -> float:
    """Seconds of CPU the container's processes have used (cgroup v1 or v2)."""
    for path, per_second in CGROUP_CPU:
        if Path(path).is_file():
            text = Path(path).read_text()
            if path.endswith("cpu.stat"):
                text = dict(line.split() for line in text.splitlines())["usage_usec"]
            return int(text) / per_second
    raise RuntimeError("no cgroup CPU accounting visible in this container")


class UnixConnection(http.client.HTTPConnection):
    """HTTP over the model server's Unix socket."""

    def __init__(self, path: str, timeout: float = 60):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        import socket

        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def http_call(conn: http.client.HTTPConnection, path: str, body: bytes):
    def call():
        conn.request("POST", path, body, HEADERS)
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{path}: {resp.status} {data[:200]!r}")

    return call


def handler_call(body: bytes, threads: int):
    """byoc's handler loaded here, as a worker loads it; None in an image without torch."""
    try:
        import torch

        from byoc.serve.config import ServeConfig
        from byoc.serve.handler import ImageClassifierHandler
    except ImportError:
        return None
    torch.set_num_threads(threads)
    model_dir = Path("/opt/ml/model")
    handler = ImageClassifierHandler(ServeConfig(model_dir=model_dir))
    handler.load(model_dir, torch.device("cpu"))
    return lambda: handler.predict(body, {"content-type": "image/jpeg"})


def measure(call, n: int, served: bool) -> tuple[list[float], float]:
    """`n` calls: their wall times (ms) and the CPU (ms) per call of the server (`served`: the
    container's less this process's) or of this process."""
    times = []
    cpu0, own0 = container_cpu(), time.process_time()
    for _ in range(n):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e3)
    own = time.process_time() - own0
    cpu = (container_cpu() - cpu0 - own) if served else own
    return times, cpu * 1e3 / n


def inside(payload_dir: Path, rounds: int, n: int, threads: int) -> dict:
    """Every payload's three paths, in interleaved rounds; medians over all rounds."""
    port = int(os.environ["SAGEMAKER_BIND_TO_PORT"])
    socket_path = glob.glob("/tmp/byoc-serve-*/mms-inference.sock")[0]
    out = {}
    for photo in sorted(payload_dir.glob("*.jpg")):
        body = photo.read_bytes()
        paths = {
            "whole": http_call(http.client.HTTPConnection("127.0.0.1", port, timeout=60), "/invocations", body),
            "model_server": http_call(UnixConnection(socket_path), "/predictions/model", body),
        }
        if (handler := handler_call(body, threads)) is not None:
            paths["handler"] = handler
        samples: dict[str, dict[str, list[float]]] = {k: {"ms": [], "cpu_ms": []} for k in paths}
        for r in range(rounds):
            for name in list(paths)[r % len(paths) :] + list(paths)[: r % len(paths)]:
                paths[name]()  # warm: the connection, the worker's caches
                times, cpu = measure(paths[name], n, served=name != "handler")
                samples[name]["ms"] += times
                samples[name]["cpu_ms"].append(cpu)
        out[photo.stem.removeprefix("photo_")] = {
            name: {"p50_ms": round(statistics.median(s["ms"]), 2), "cpu_ms": round(statistics.median(s["cpu_ms"]), 2)}
            for name, s in samples.items()
        }
    return out


# ---- on the host


def run_image(image: str, label: str, model_dir: Path, payload_dir: Path, args) -> dict:
    """Start `image` serving the bench's model, measure its layers inside it, remove it."""
    from bench import containers

    port = containers.free_port()
    opts = ["-v", f"{model_dir}:/opt/ml/model:ro", "-v", f"{REPO / 'bench'}:/bench/bench:ro"]
    opts += ["-v", f"{payload_dir}:/payloads:ro", "-e", f"SAGEMAKER_BIND_TO_PORT={port}"]
    opts += ["-e", "BYOC_BIND_HOST=127.0.0.1"]
    for setting in args.env:
        opts += ["-e", setting]
    with containers.running(image, ["serve"], opts, f"layers-{label}") as (name, started):
        containers.wait_status(f"http://127.0.0.1:{port}/ping", started, 300, name)
        command = ["docker", "exec", "-e", "PYTHONPATH=/bench", "-e", "OMP_WAIT_POLICY=PASSIVE", name, "python3"]
        command += ["-m", "bench.layers", "--inside", "--payload-dir", "/payloads", "--rounds", str(args.rounds)]
        command += ["--requests", str(args.requests), "--threads", str(args.threads)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            raise RuntimeError(f"{label}: bench.layers inside exited {done.returncode}: {done.stderr[-1500:]}")
        return json.loads(done.stdout)


def table(results: dict) -> str:
    lines = [
        "| image | payload | whole p50 ms | model server p50 ms | handler p50 ms | front ms | model-server hop ms "
        "| CPU ms/request: whole / model server / handler |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, by_payload in results.items():
        for payload, p in by_payload.items():
            whole, mms, handler = p["whole"], p["model_server"], p.get("handler")
            hop = f"{mms['p50_ms'] - handler['p50_ms']:.1f}" if handler else "-"
            cpus = " / ".join(f"{x['cpu_ms']:.1f}" for x in (whole, mms, handler) if x)
            lines.append(
                f"| {label} | {payload} | {whole['p50_ms']:.1f} | {mms['p50_ms']:.1f} | "
                f"{handler['p50_ms'] if handler else '-'} | {whole['p50_ms'] - mms['p50_ms']:.1f} | {hop} | {cpus} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.layers", description=__doc__.split("\n\n")[0])
    p.add_argument("--images", default="byoc,byoc-cpu", help="which of: " + ", ".join(IMAGES))
    p.add_argument("--payloads", default="0.3MP,2MP", help="photo sizes (bench.payloads.MEGAPIXELS)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds per payload")
    p.add_argument("--requests", type=int, default=20, help="requests per path and round")
    p.add_argument("--threads", type=int, default=2, help="torch threads of the in-process handler")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="a serving setting, repeatable")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "layers.json")
    p.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--payload-dir", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.inside:
        print(json.dumps(inside(args.payload_dir, args.rounds, args.requests, args.threads)))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # A stop (SIGTERM) unwinds like an error, so that the containers are removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    from bench import artifact, containers, payloads

    with containers.cleaned_up(), tempfile.TemporaryDirectory(prefix="byoc-layers-") as tmp:
        work = Path(tmp)
        model_dir = artifact.write_served(work)
        chosen = {k: v for k, v in payloads.MEGAPIXELS.items() if k in args.payloads.split(",")}
        photos = payloads.write(work / "payloads", chosen)
        results = {}
        for label in args.images.split(","):
            log.info("%s (%s)", label, IMAGES[label])
            results[label] = run_image(IMAGES[label], label, model_dir, next(iter(photos.values())).parent, args)
    doc = {"measured_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "load_average": os.getloadavg()[0]}
    doc |= {"rounds": args.rounds, "requests": args.requests, "env": args.env, "images": results}
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
