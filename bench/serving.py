"""The serving benchmark: each server in its container on the host network, one at a time,
on the same cores, the same model and the same photos; cold start, latency at several
concurrencies, saturated throughput and memory."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from bench import containers, httpload

log = logging.getLogger("bench")


@dataclass
class Server:
    """How to run one model server: image, docker options and paths."""

    label: str
    image: str
    setup: Callable[[Path, int], tuple[list[str], list[str]]]  # (workdir, port) -> (docker opts, args)
    ping: str
    invoke: str
    worker_marker: str
    notes: str = ""


def byoc_server(model_dir: Path, image: str = "byoc-serve:latest", label: str = "byoc",
                env: dict[str, str] | None = None) -> Server:
    def setup(_work: Path, port: int):
        opts = ["-v", f"{model_dir}:/opt/ml/model:ro", "-e", f"SAGEMAKER_BIND_TO_PORT={port}",
                "-e", "BYOC_BIND_HOST=127.0.0.1"]
        for k, v in (env or {}).items():
            opts += ["-e", f"{k}={v}"]
        return opts, ["serve"]

    return Server(label, image, setup, "/ping", "/invocations", "model_service_worker",
                  notes=" ".join(f"{k}={v}" for k, v in (env or {}).items()))


def torchserve_server(mar: Path, image: str = "byoc-torchserve:latest") -> Server:
    def setup(work: Path, port: int):
        ports = [containers.free_port() for _ in range(4)]
        config = work / f"ts-{port}.properties"
        # Stock settings (workers = cores, batch 1); every listener on loopback.
        config.write_text(
            f"inference_address=http://127.0.0.1:{port}\n"
            f"management_address=http://127.0.0.1:{ports[0]}\n"
            f"metrics_address=http://127.0.0.1:{ports[1]}\n"
            f"grpc_inference_address=127.0.0.1\ngrpc_management_address=127.0.0.1\n"
            f"grpc_inference_port={ports[2]}\ngrpc_management_port={ports[3]}\n"
            "disable_system_metrics=true\n")
        opts = ["-v", f"{mar.parent}:/models:ro", "-v", f"{config}:/config.properties:ro"]
        return opts, ["--models", f"model={mar.name}"]

    return Server("torchserve", image, setup, "/ping", "/predictions/model", "model_service_worker",
                  notes="stock image_classifier handler, default config")


@dataclass
class ServerResult:
    label: str
    image: str
    notes: str
    cold_start_ping_s: float | None = None
    cold_start_first_prediction_s: float | None = None
    memory: dict = field(default_factory=dict)
    load: dict = field(default_factory=dict)  # payload -> [LoadResult json per concurrency]
    error: str = ""

    def to_json(self) -> dict:
        return dict(self.__dict__)


def run_server(server: Server, payloads: dict[str, Path], concurrencies: tuple[int, ...], seconds: float,
               warmup: float, work: Path, start_timeout: float = 300) -> ServerResult:
    """Start the server, time its cold start, load it with every payload and concurrency, stop it."""
    result = ServerResult(server.label, server.image, server.notes)
    port = containers.free_port()
    opts, args = server.setup(work, port)
    base = f"http://127.0.0.1:{port}"
    first = next(iter(payloads.values())).read_bytes()
    try:
        with containers.running(server.image, args, opts, server.label) as (name, started):
            result.cold_start_ping_s = round(containers.wait_status(base + server.ping, started, start_timeout, name), 2)
            # The first prediction: a /ping 200 may come before a worker holds the model.
            while httpload.post(base + server.invoke, first, "image/jpeg") != 200:
                if time.monotonic() - started > start_timeout:
                    raise RuntimeError(f"no successful prediction within {start_timeout:.0f} s")
                time.sleep(0.2)
            result.cold_start_first_prediction_s = round(time.monotonic() - started, 2)
            log.info("%s: /ping 200 after %.1f s, first prediction after %.1f s", server.label,
                     result.cold_start_ping_s, result.cold_start_first_prediction_s)
            for pname, path in payloads.items():
                body = path.read_bytes()
                result.load[pname] = []
                for c in concurrencies:
                    cpu0 = containers.cpu_seconds(name)
                    r = httpload.run("127.0.0.1", port, server.invoke, body, "image/jpeg", c, seconds, warmup)
                    cpu1 = containers.cpu_seconds(name)
                    if cpu0 is not None and cpu1 is not None and r.total_requests:
                        r.cpu_ms_per_request = round((cpu1 - cpu0) * 1e3 / r.total_requests, 1)
                    log.info("%s %s c=%d: p50 %.1f ms p99 %.1f ms %.2f req/s (%d ok, %d errors), %s CPU ms/request",
                             server.label, pname, c, r.p50_ms, r.p99_ms, r.rps, r.requests, r.errors, r.cpu_ms_per_request)
                    if r.errors:
                        log.warning("%s: first error: %s", server.label, r.first_error)
                    result.load[pname].append(r.to_json())
            result.memory = containers.memory(name, server.worker_marker)  # after load: the peak working set
    except Exception as exc:  # one failed server must not lose the others' results
        log.error("%s failed: %s", server.label, exc)
        result.error = str(exc)[:2000]
    return result


def in_image(image: str, module: str, args: list[str], mounts: dict[Path, str], label: str) -> dict:
    """`python3 -m bench.MODULE ARGS` inside `image` (no network, the core budget); its JSON output."""
    repo = Path(__file__).resolve().parents[1]
    # OpenMP waits as in the server's workers (byoc.serve.mms): spinning threads would make the
    # limit depend on what else runs on the box.
    opts = ["--network", "none", "-v", f"{repo / 'bench'}:/bench/bench:ro", "-e", "PYTHONPATH=/bench",
            "-e", "OMP_WAIT_POLICY=PASSIVE", "--entrypoint", "python3"]
    for host, inside in mounts.items():
        opts += ["-v", f"{host}:{inside}:ro"]
    proc = containers.run_once(image, ["-m", f"bench.{module}", *args], opts, label)
    if proc.returncode != 0:
        raise RuntimeError(f"bench.{module} in {image} exited {proc.returncode}: {proc.stderr.strip()[-1500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_inprocess(image: str, model_dir: Path, photos: dict[str, Path], threads: int, seconds: float,
                  batches: str = "1,2,4,8") -> dict:
    """bench.inprocess inside the serving image: the same torch and libraries as the server, no server."""
    return in_image(image, "inprocess", ["--model-dir", "/model", "--payloads", "/payloads", "--threads", str(threads),
                                         "--seconds", str(seconds), "--batches", batches, "--names", ",".join(photos)],
                    {model_dir: "/model", next(iter(photos.values())).parent: "/payloads"}, "inprocess")


def run_accuracy(image: str, model_dir: Path, data: Path) -> dict:
    """bench.accuracy inside the serving image: top-1 per decode pipeline."""
    return in_image(image, "accuracy", ["--model-dir", "/model", "--data", "/data"],
                    {model_dir: "/model", data: "/data"}, "accuracy")
