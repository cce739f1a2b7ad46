"""The serving benchmark: each server in its container on the host network, one at a time,
on the same cores, the same model and the same photos; cold start, latency at several
concurrencies, saturated throughput and memory. And the CPU image's cold start as a
real-time endpoint runs it (no limits) beside serverless' (`docker run --memory 2g --cpus 1`)."""

from __future__ import annotations

import itertools
import json
import logging
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench import containers, httpload

log = logging.getLogger("bench")
REPO = Path(__file__).resolve().parents[1]


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
    limit: bool = False  # measure the in-process limit inside this server's container (byoc images)
    runtime: str = ""  # what it runs the model with, where its log does not say (the peers)
    resources: tuple[str, ...] = ()  # docker run's resource limits (--memory, --cpus), beside the core budget


def byoc_server(
    model_dir: Path,
    image: str = "byoc-serve:latest",
    label: str = "byoc",
    env: dict[str, str] | None = None,
    limit: bool = False,
    resources: tuple[str, ...] = (),
) -> Server:
    def setup(_work: Path, port: int):
        opts = [
            *resources,
            "-v",
            f"{model_dir}:/opt/ml/model:ro",
            "-e",
            f"SAGEMAKER_BIND_TO_PORT={port}",
            "-e",
            "BYOC_BIND_HOST=127.0.0.1",
        ]
        for k, v in (env or {}).items():
            opts += ["-e", f"{k}={v}"]
        return opts, ["serve"]

    return Server(
        label,
        image,
        setup,
        "/ping",
        "/invocations",
        "model_service_worker",
        notes=" ".join([*resources, *(f"{k}={v}" for k, v in (env or {}).items())]),
        limit=limit,
        resources=resources,
    )


def torchserve_server(
    mar: Path, image: str = "byoc-torchserve:latest", label: str = "torchserve", env: dict[str, str] | None = None
) -> Server:
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
            "disable_system_metrics=true\n"
        )
        opts = ["-v", f"{mar.parent}:/models:ro", "-v", f"{config}:/config.properties:ro"]
        for k, v in (env or {}).items():
            opts += ["-e", f"{k}={v}"]
        return opts, ["--models", f"model={mar.name}"]

    notes = "stock image_classifier handler, default config"
    return Server(
        label,
        image,
        setup,
        "/ping",
        "/predictions/model",
        "model_service_worker",
        notes=" ".join([notes, *(f"{k}={v}" for k, v in (env or {}).items())]),
    )


@dataclass(frozen=True)
class Peer:
    """A peer server image (docker/bench/NAME/): how bench finds its model workers and its health check."""

    image: str
    worker_marker: str
    docker_opts: tuple[str, ...] = ()
    setup_notes: str = ""


PEERS = {
    # Ray keeps its object store in /dev/shm: Docker's 64 MB default makes it fall back to /tmp, and
    # Ray's documentation asks for a larger one.
    "rayserve": Peer(
        "byoc-rayserve:latest",
        "ray::ServeReplica",
        ("--shm-size", "1g"),
        "Ray Serve 2.60, @serve.batch, FastAPI ingress",
    ),
    "litserve": Peer("byoc-litserve:latest", "peer-worker", (), "LitServe 0.2.19, its batching, raw body"),
}
# The peers' runtimes, by the label suffix that picks them: the TorchScript file (as byoc-serve:latest
# serves it) or the INT8 ONNX file (as byoc-serve:cpu does).
PEER_RUNTIMES = {"": "torchscript", "-onnx": "onnx-int8"}
PEER_BATCH = {"PEER_MAX_BATCH": "4", "PEER_BATCH_WAIT_MS": "5"}  # byoc's BYOC_BATCH_SIZE on a CPU; a short wait


def peer_labels() -> list[str]:
    """Every peer server label --servers takes: rayserve, rayserve-onnx, litserve, litserve-onnx."""
    return [name + suffix for name in PEERS for suffix in PEER_RUNTIMES]


def parse_sizing(text: str) -> tuple[int, int]:
    """'2x1' -> (workers, threads); ValueError for anything else."""
    workers, sep, threads = text.partition("x")
    if not sep or not workers.isdigit() or not threads.isdigit() or int(workers) < 1 or int(threads) < 1:
        raise ValueError(f"{text!r} is not WORKERSxTHREADS (e.g. 2x1)")
    return int(workers), int(threads)


def peer_server(model_dir: Path, label: str, sizing: str) -> Server:
    """The peer `label` (rayserve, litserve-onnx, ...) serving `model_dir` with `sizing` (WORKERSxTHREADS)."""
    name = label.removesuffix("-onnx")
    peer, runtime = PEERS[name], PEER_RUNTIMES[label[len(name) :]]
    workers, threads = parse_sizing(sizing)
    env = {"PEER_RUNTIME": runtime, "PEER_WORKERS": str(workers), "PEER_THREADS": str(threads), **PEER_BATCH}

    def setup(_work: Path, port: int):
        opts = [*peer.docker_opts, "-v", f"{model_dir}:/opt/ml/model:ro", "-e", f"PEER_PORT={port}"]
        for k, v in env.items():
            opts += ["-e", f"{k}={v}"]
        return opts, []

    notes = f"{peer.setup_notes}; {sizing} " + " ".join(f"{k}={v}" for k, v in env.items())
    return Server(label, peer.image, setup, "/ping", "/invocations", peer.worker_marker, notes=notes, runtime=runtime)


@dataclass
class ServerResult:
    label: str
    image: str
    notes: str
    cold_start_ping_s: float | None = None
    cold_start_first_prediction_s: float | None = None
    memory: dict = field(default_factory=dict)
    load: dict = field(default_factory=dict)  # payload -> [LoadResult json per concurrency]
    limit: dict = field(default_factory=dict)  # payload -> bench.inprocess result, taken just before its load
    runtime: str = ""  # what byoc's workers ran the model with (their "model_loaded" line); "" for others
    sizing: str = ""  # a peer's workers x threads (WxT), chosen by `sweep` when it ran
    sweep: dict = field(default_factory=dict)  # a peer's sweep: sizing -> its short load point, and the best
    image_gb: float | None = None  # `docker image inspect`'s size of the image
    error: str = ""

    def to_json(self) -> dict:
        return dict(self.__dict__)


def run_server(
    server: Server,
    payloads: dict[str, Path],
    concurrencies: tuple[int, ...],
    seconds: float,
    warmup: float,
    work: Path,
    start_timeout: float = 300,
    threads: int = 2,
    limit_seconds: float = 3.0,
    server_warmup: float = 10.0,
) -> ServerResult:
    """Start the server, time its cold start, warm it up (`server_warmup` seconds of load at
    concurrency 4, not counted), load it with every payload and concurrency, stop it.
    With `server.limit`, the in-process limit for each payload is taken in the same container around
    that payload's load points (same image, same cgroup, same minutes; the workers idle meanwhile):
    see `combine`."""
    result = ServerResult(server.label, server.image, server.notes)
    port = containers.free_port()
    opts, args = server.setup(work, port)
    if server.limit:
        opts += [
            "-v",
            f"{REPO / 'bench'}:/bench/bench:ro",
            "-v",
            f"{next(iter(payloads.values())).parent}:/payloads:ro",
        ]
    base = f"http://127.0.0.1:{port}"
    first = next(iter(payloads.values())).read_bytes()
    try:
        with containers.running(server.image, args, opts, server.label) as (name, started):
            result.cold_start_ping_s, result.cold_start_first_prediction_s = time_cold_start(
                server, base, first, name, started, start_timeout
            )
            if server_warmup > 0:  # the JVM's JIT and the workers' first passes, before anything counts
                httpload.run("127.0.0.1", port, server.invoke, first, "image/jpeg", 4, server_warmup, 0)
            session = LimitSession(name, threads, limit_seconds) if server.limit else None
            try:
                load_all(server, name, port, payloads, concurrencies, seconds, warmup, result, session)
            finally:
                if session:
                    session.close()
            result.memory = containers.memory(name, server.worker_marker)  # after load: the peak working set
            result.runtime = log_event(name, "model_loaded").get("runtime", "") or server.runtime
    except Exception as exc:  # one failed server must not lose the others' results
        log.error("%s failed: %s", server.label, exc)
        result.error = str(exc)[:2000]
    return result


def sweep(
    make: Callable[[str], Server],
    sizings: list[str],
    body: bytes,
    concurrency: int,
    seconds: float,
    warmup: float,
    work: Path,
    start_timeout: float = 300,
) -> dict:
    """One short load point (`concurrency` connections, `seconds` measured after `warmup`) for each
    sizing (WORKERSxTHREADS) of a server, each in a fresh container; the best is the one with the most
    requests per second (the saturated throughput the targets judge). A sizing that fails is recorded
    with its error and never chosen."""
    points: dict[str, dict] = {}
    for sizing in sizings:
        server = make(sizing)
        port = containers.free_port()
        opts, args = server.setup(work, port)
        try:
            with containers.running(server.image, args, opts, server.label) as (name, started):
                time_cold_start(server, f"http://127.0.0.1:{port}", body, name, started, start_timeout)
                r = httpload.run("127.0.0.1", port, server.invoke, body, "image/jpeg", concurrency, seconds, warmup)
            points[sizing] = {"rps": r.rps, "p50_ms": r.p50_ms, "errors": r.errors}
        except Exception as exc:  # one sizing that does not start must not end the sweep
            points[sizing] = {"rps": None, "error": str(exc)[:500]}
        log.info("%s sweep %s: %s", server.label, sizing, points[sizing])
    return {"concurrency": concurrency, "seconds": seconds, "points": points, "best": best_sizing(points, sizings[0])}


def best_sizing(points: dict[str, dict], fallback: str) -> str:
    """The sizing with the most requests per second among those answered without errors; `fallback` when none."""
    answered = {k: p["rps"] for k, p in points.items() if p.get("rps") and not p.get("errors")}
    return max(answered, key=lambda k: answered[k]) if answered else fallback


def time_cold_start(
    server: Server, base: str, body: bytes, name: str, started: float, timeout: float
) -> tuple[float, float]:
    """Seconds from `started` (just before `docker run`) to /ping 200 and to the first successful prediction."""
    ping_s = containers.wait_status(base + server.ping, started, timeout, name)
    # The first prediction: a /ping 200 may come before a worker holds the model.
    while httpload.post(base + server.invoke, body, "image/jpeg") != 200:
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"no successful prediction within {timeout:.0f} s")
        time.sleep(0.2)
    first_s = time.monotonic() - started
    log.info("%s: /ping 200 after %.1f s, first prediction after %.1f s", server.label, ping_s, first_s)
    return round(ping_s, 2), round(first_s, 2)


def log_event(name: str, event: str) -> dict:
    """byoc-serve's first JSON log line of `event` ("config": its workers, threads and body limit;
    "model_loaded": a worker's runtime, which MMS prefixes with its own fields); {} when there is none."""
    logs = containers.docker("logs", name, check=False)
    for line in (logs.stdout + logs.stderr).splitlines():
        start = line.find(f'{{"event": "{event}"')
        if start >= 0:
            return json.JSONDecoder().raw_decode(line, start)[0]
    return {}


def cold_start(server: Server, body: bytes, work: Path, timeout: float = 300) -> dict:
    """One cold start of a byoc server: container start to /ping 200 and to the first prediction,
    the sizing it chose, and its memory right after that prediction."""
    port = containers.free_port()
    opts, args = server.setup(work, port)
    with containers.running(server.image, args, opts, server.label) as (name, started):
        ping_s, first_s = time_cold_start(server, f"http://127.0.0.1:{port}", body, name, started, timeout)
        config = log_event(name, "config")
        return {
            "ping_s": ping_s,
            "first_prediction_s": first_s,
            "workers": config.get("workers"),
            "torch_threads": config.get("torch_threads"),
            "max_request_bytes": int(config.get("max_request_bytes", 0)) or None,
            "workers_from": config.get("workers_from"),
            "container_mb": containers.memory(name, server.worker_marker)["container_mb"],
            "runtime": log_event(name, "model_loaded").get("runtime"),
        }


COLD_START_FIGURES = ("ping_s", "first_prediction_s", "container_mb")


def cold_starts(servers: dict[str, Server], body: bytes, work: Path, rounds: int) -> dict:
    """`rounds` cold starts of each server (real-time and serverless), interleaved and in turn first,
    so that both see the same minutes and the same file cache; the medians, and each kind's ratio
    to the first kind's (serverless / real-time)."""
    samples: dict[str, list[dict]] = {kind: [] for kind in servers}
    kinds = list(servers)
    for i in range(rounds):
        for kind in kinds[i % len(kinds) :] + kinds[: i % len(kinds)]:
            samples[kind].append(cold_start(servers[kind], body, work))
    out: dict = {"rounds": rounds, "kinds": {}}
    for kind, runs in samples.items():
        medians = {f: round(statistics.median(r[f] for r in runs), 2) for f in COLD_START_FIGURES}
        out["kinds"][kind] = {
            "label": servers[kind].label,
            "image": servers[kind].image,
            "resources": " ".join(servers[kind].resources) or "none",
            **{
                k: runs[-1].get(k) for k in ("workers", "torch_threads", "max_request_bytes", "workers_from", "runtime")
            },
            **medians,
            "samples": runs,
        }
    base = out["kinds"][kinds[0]]
    for kind in kinds[1:]:
        out["kinds"][kind]["ratio"] = {
            f: round(out["kinds"][kind][f] / base[f], 3) if base[f] else None for f in COLD_START_FIGURES
        }
    return out


SLICES = 3  # the concurrency-1 point, in slices with the in-process limit taken between them


def load_point(
    name: str, port: int, server: Server, body: bytes, concurrency: int, seconds: float, warmup: float
) -> httpload.LoadResult:
    """One load run, with the server container's CPU time per request."""
    cpu0 = containers.cpu_seconds(name)
    r = httpload.run("127.0.0.1", port, server.invoke, body, "image/jpeg", concurrency, seconds, warmup)
    cpu1 = containers.cpu_seconds(name)
    if cpu0 is not None and cpu1 is not None and r.total_requests:
        r.cpu_ms_per_request = round((cpu1 - cpu0) * 1e3 / r.total_requests, 1)
    return r


def load_all(
    server: Server,
    name: str,
    port: int,
    payloads: dict[str, Path],
    concurrencies: tuple[int, ...],
    seconds: float,
    warmup: float,
    result: ServerResult,
    session: LimitSession | None,
) -> None:
    """Every payload at every concurrency into `result.load`; the limit around them into `result.limit`.
    With a limit session the first (lowest) concurrency runs in SLICES slices, the limit's batch-1
    latency taken before each and after the last, so that both see the same minutes of this box."""
    for pname, path in payloads.items():
        body = path.read_bytes()
        asked: list[dict] = []
        if session:
            asked.append(session.ask(pname))
        result.load[pname] = []
        for i, c in enumerate(concurrencies):
            if session and i == 0:
                parts, between = [], [asked[0]["e2e"]]
                for k in range(SLICES):
                    parts.append(load_point(name, port, server, body, c, seconds / SLICES, warmup if k == 0 else 0.5))
                    between.append(session.ask(pname, "e2e")["e2e"])
                r = httpload.merge(parts)
                asked.append(
                    {
                        "e2e_slices": [
                            {"server_p50_ms": p.p50_ms, "limit_before_ms": a["ms"], "limit_after_ms": b["ms"]}
                            for p, (a, b) in zip(parts, itertools.pairwise(between), strict=True)
                        ],
                        "e2e": between,
                    }
                )
            else:
                r = load_point(name, port, server, body, c, seconds, warmup)
            log.info(
                "%s %s c=%d: p50 %.1f ms p99 %.1f ms %.2f req/s (%d ok, %d errors), %s CPU ms/request",
                server.label,
                pname,
                c,
                r.p50_ms,
                r.p99_ms,
                r.rps,
                r.requests,
                r.errors,
                r.cpu_ms_per_request,
            )
            if r.errors:
                log.warning("%s: first error: %s", server.label, r.first_error)
            result.load[pname].append(r.to_json())
        if session:
            asked.append(session.ask(pname, "best_batch"))
            lim = result.limit[pname] = combine(session.info, pname, *asked)
            e2e = lim["e2e_batch1_ms"][pname]
            log.info(
                "%s %s in-process limit: batch 1 %s ms (%s; from %s), best batch %s img/s; c=%d p50 / limit %s",
                server.label,
                pname,
                e2e["ms"],
                e2e["pipeline"],
                e2e["samples_ms"],
                lim["best_batch"][pname]["images_per_s"],
                concurrencies[0],
                e2e["ratio"],
            )


# OpenMP waits as in the server's workers (byoc.serve.mms): spinning threads would make the
# limit depend on what else runs on the box (and cost the same ResNet-50 forward pass here).
LIMIT_ENV = ["-e", "PYTHONPATH=/bench", "-e", "OMP_WAIT_POLICY=PASSIVE"]


class LimitSession:
    """bench.inprocess --interactive inside the running server container `name` (its torch, its
    libraries, its cores; the model loaded once), asked for one payload's figures at a time."""

    def __init__(self, name: str, threads: int, seconds: float, batches: str = "1,2,4,8"):
        self.proc = subprocess.Popen(
            [
                "docker",
                "exec",
                "-i",
                *LIMIT_ENV,
                name,
                "python3",
                "-m",
                "bench.inprocess",
                "--interactive",
                "--model-dir",
                "/opt/ml/model",
                "--payloads",
                "/payloads",
                "--threads",
                str(threads),
                "--seconds",
                str(seconds),
                "--batches",
                batches,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.info = self._answer()

    def _answer(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            raise RuntimeError(f"bench.inprocess exited {self.proc.returncode}: {self.proc.stderr.read()[-1500:]}")
        return json.loads(line)

    def ask(self, payload: str, *parts: str) -> dict:
        self.proc.stdin.write(f"{payload} {' '.join(parts)}\n")
        self.proc.stdin.flush()
        return self._answer()

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def combine(info: dict, payload: str, before: dict, sliced: dict, after_all: dict) -> dict:
    """One payload's limit in bench.inprocess's document shape. Batch 1: the median of the
    measurements taken between the concurrency-1 slices, and `ratio`, the median over slices of the
    slice's p50 over the mean of the limit just before and just after it. Best batch: the mean of
    the rates before the first load point and after the last (the minutes the server ran in)."""
    samples = [e["ms"] for e in sliced["e2e"]]
    ratios = [s["server_p50_ms"] / ((s["limit_before_ms"] + s["limit_after_ms"]) / 2) for s in sliced["e2e_slices"]]
    e2e = {
        **before["e2e"],
        "ms": round(statistics.median(samples), 1),
        "samples_ms": samples,
        "cpu_ms": round(statistics.median(e["cpu_ms"] for e in sliced["e2e"]), 1),
        "slices": sliced["e2e_slices"],
        "ratio": round(statistics.median(ratios), 3),
    }
    rates = {
        b: round((r + after_all["best_batch"]["by_batch"][b]) / 2, 2)
        for b, r in before["best_batch"]["by_batch"].items()
    }
    top = max(rates, key=rates.get)
    best = {
        "batch": top,
        "images_per_s": rates[top],
        "by_batch": rates,
        "before": before["best_batch"],
        "after": after_all["best_batch"],
    }
    return {
        **info,
        "preprocess_ms": {payload: before["preprocess"]},
        "e2e_batch1_ms": {payload: e2e},
        "handler_ms": {payload: before["handler_ms"]},
        "best_batch": {payload: best},
    }


def in_image(image: str, module: str, args: list[str], mounts: dict[Path, str], label: str) -> dict:
    """`python3 -m bench.MODULE ARGS` inside `image` (no network, the core budget); its JSON output."""
    opts = ["--network", "none", "-v", f"{REPO / 'bench'}:/bench/bench:ro", *LIMIT_ENV, "--entrypoint", "python3"]
    for host, inside in mounts.items():
        opts += ["-v", f"{host}:{inside}:ro"]
    proc = containers.run_once(image, ["-m", f"bench.{module}", *args], opts, label)
    if proc.returncode != 0:
        raise RuntimeError(f"bench.{module} in {image} exited {proc.returncode}: {proc.stderr.strip()[-1500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_accuracy(image: str, model_dir: Path, data: Path) -> dict:
    """bench.accuracy inside the serving image: top-1 per decode pipeline."""
    return in_image(
        image,
        "accuracy",
        ["--model-dir", "/model", "--data", "/data"],
        {model_dir: "/model", data: "/data"},
        "accuracy",
    )
