"""Run the benchmarks (serving, cold start real-time vs serverless, training, precision: TorchScript
vs ONNX Runtime fp32 and INT8, image sizes) and write bench/results/.

Writes results.json, summary.md and PNG plots, prints the tables. Exit 1 only when a run
failed (a missed target is a finding, not a failure)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from bench import accuracy, artifact, containers, payloads, plot, precision, report, serving, sizes, training

log = logging.getLogger("bench")
REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
SUITES = ("serving", "coldstart", "training", "precision", "sizes")
# SageMaker Serverless Inference's container, as far as docker run can say: a memory size of 2048 MB
# (1024..6144) and the one vCPU it comes with.
SERVERLESS_RESOURCES = ("--memory", "2g", "--cpus", "1")
# byoc-serve settings besides its defaults (SageMaker's environment variables): label -> env.
VARIANTS = {
    "2w1t": {"SAGEMAKER_MODEL_SERVER_WORKERS": "2", "BYOC_TORCH_THREADS": "1"},
    "2w2t": {"SAGEMAKER_MODEL_SERVER_WORKERS": "2", "BYOC_TORCH_THREADS": "2"},
    "1w2t": {"SAGEMAKER_MODEL_SERVER_WORKERS": "1", "BYOC_TORCH_THREADS": "2"},
    "3w2t": {"SAGEMAKER_MODEL_SERVER_WORKERS": "3", "BYOC_TORCH_THREADS": "2"},
    # OpenMP threads that spin while they wait (the default before byoc.serve.mms set PASSIVE).
    "spin": {"OMP_WAIT_POLICY": "ACTIVE"},
    # Dynamic batching at the front (up to BYOC_BATCH_SIZE waiting requests per forward pass).
    "b1": {"BYOC_BATCH_SIZE": "1"},
    "b4": {"BYOC_BATCH_SIZE": "4"},
    "b8": {"BYOC_BATCH_SIZE": "8"},
    "b8d5": {"BYOC_BATCH_SIZE": "8", "BYOC_MAX_BATCH_DELAY_MS": "5"},  # waits up to 5 ms to fill a batch
}
DEFAULT_VARIANTS = "1w2t,2w1t"


def machine() -> dict:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    docker_version = containers.docker("version", "-f", "{{.Server.Version}}", check=False).stdout.strip()
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_gb, 1),
        "kernel": platform.release(),
        "docker": docker_version,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }
    info["summary"] = f"{cpu}, {info['cores']} cores, {info['memory_gib']} GiB, load {info['load_average_at_start'][0]}"
    return info


def ensure_image(image: str, what: str) -> None:
    if not containers.image_exists(image):
        log.info("building %s (scripts/build_images.sh %s)", image, what)
        subprocess.run([str(REPO / "scripts" / "build_images.sh"), what], check=True)


def run_serving(args, work: Path, failures: list[str]) -> dict:
    ensure_image("byoc-serve:latest", "serve")
    if "torchserve" in args.servers:
        ensure_image("byoc-torchserve:latest", "torchserve")
    ensure_image("byoc-serve:cpu", "cpu")
    for name in dict.fromkeys(label.removesuffix("-onnx") for label in args.servers if label in serving.peer_labels()):
        ensure_image(serving.PEERS[name].image, name)
    photos = chosen_payloads(args, work)
    model_dir = artifact.write_served(work)
    mar = artifact.write_mar(model_dir, work / "mar")
    out: dict = {
        "model": {"arch": artifact.ARCH, "classes": artifact.CLASSES, "image_size": artifact.IMAGE_SIZE},
        "payload_bytes": {k: p.stat().st_size for k, p in photos.items()},
        "concurrency": list(args.concurrency),
        "seconds_per_point": args.seconds,
        "threads": args.threads,
        "servers": [],
    }
    # The judged images measure their in-process limit in their own container (report.JUDGED).
    limit = not args.no_inprocess
    servers = [serving.byoc_server(model_dir, limit=limit)] if "byoc" in args.servers else []
    servers += [serving.byoc_server(model_dir, label=f"byoc-{v}", env=VARIANTS[v]) for v in args.variants]
    if "torchserve" in args.servers:
        servers.append(serving.torchserve_server(mar))
        # For comparison only: TorchServe with the same OpenMP waits as byoc's workers.
        servers.append(serving.torchserve_server(mar, label="torchserve-passive", env={"OMP_WAIT_POLICY": "PASSIVE"}))
    if "byoc" in args.servers:  # no in-process limit: that is torch's, and this image has none
        servers.append(serving.byoc_server(model_dir, image="byoc-serve:cpu", label="byoc-cpu"))
    for server in servers:
        out["servers"].append(serve_one(args, server, photos, work, failures).to_json())
    for label in (s for s in args.servers if s in serving.peer_labels()):
        out["servers"].append(run_peer(args, model_dir, label, photos, work, failures).to_json())
    return out


def serve_one(args, server: serving.Server, photos: dict[str, Path], work: Path, failures: list[str]):
    """One server's serving run (bench.serving.run_server with the options), its image's size, its failure named."""
    result = serving.run_server(
        server,
        photos,
        tuple(args.concurrency),
        args.seconds,
        args.warmup,
        work,
        threads=args.threads,
        limit_seconds=args.inprocess_seconds,
        server_warmup=args.server_warmup,
    )
    size = containers.image_size(server.image)
    result.image_gb = round(size / 1e9, 2) if size else None
    if result.error:
        failures.append(f"{server.label}: {result.error.splitlines()[0]}")
    return result


def run_peer(args, model_dir: Path, label: str, photos: dict[str, Path], work: Path, failures: list[str]):
    """A peer server at its best sizing: with several --peer-sizing values, a short sweep at the highest
    concurrency on the first payload picks the one with the most requests per second first."""
    sweep: dict = {}
    if len(args.peer_sizing) > 1:
        sweep = serving.sweep(
            lambda sizing: serving.peer_server(model_dir, label, sizing),
            args.peer_sizing,
            next(iter(photos.values())).read_bytes(),
            max(args.concurrency),
            args.sweep_seconds,
            args.warmup,
            work,
        )
    chosen = sweep.get("best") or args.peer_sizing[0]
    result = serve_one(args, serving.peer_server(model_dir, label, chosen), photos, work, failures)
    result.sizing, result.sweep = chosen, sweep
    return result


def chosen_payloads(args, work: Path) -> dict[str, Path]:
    return payloads.write(work / "payloads", {k: v for k, v in payloads.MEGAPIXELS.items() if k in args.payloads})


def run_cold_starts(args, work: Path) -> dict:
    """byoc-serve:cpu's cold start as a real-time endpoint runs it (no limits) and as serverless does."""
    ensure_image("byoc-serve:cpu", "cpu")
    model_dir = artifact.write_served(work)
    photo = payloads.write(work / "payloads", {"2MP": payloads.MEGAPIXELS["2MP"]})["2MP"]
    kinds = {
        "real-time": serving.byoc_server(model_dir, image="byoc-serve:cpu", label="byoc-cpu"),
        "serverless": serving.byoc_server(
            model_dir, image="byoc-serve:cpu", label="byoc-cpu-serverless", resources=SERVERLESS_RESOURCES
        ),
    }
    out = serving.cold_starts(kinds, photo.read_bytes(), work, args.cold_start_rounds)
    out["payload"] = "2MP"
    for kind, row in out["kinds"].items():
        log.info("cold start %s: /ping %.1f s, first prediction %.1f s", kind, row["ping_s"], row["first_prediction_s"])
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the chosen suites, write bench/results/ (or --out) and print the tables; 1 when a run failed."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    with stop_unwinds(), containers.cleaned_up():
        results = run_suites(args, "make bench  # = .venv/bin/python -m bench " + " ".join(argv or sys.argv[1:]))
    write_results(results, args.out)
    if results["failures"]:
        print("FAILED runs:\n  " + "\n  ".join(results["failures"]), file=sys.stderr)
        return 1
    return 0


def parser() -> argparse.ArgumentParser:
    """The command line; `python -m bench --help` prints it."""
    ap = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--only", default=",".join(SUITES), help=f"comma-separated suites from {','.join(SUITES)}")
    ap.add_argument("--payloads", default=",".join(payloads.MEGAPIXELS), help="photo sizes to send")
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--seconds", type=float, default=10.0, help="measured seconds per load point")
    ap.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each load point")
    ap.add_argument(
        "--server-warmup", type=float, default=10.0, help="unmeasured seconds of load after each server's cold start"
    )
    ap.add_argument(
        "--servers",
        default="byoc,torchserve",
        help=f"which of byoc,torchserve,{','.join(serving.peer_labels())} to run (variants aside); a peer "
        "(-onnx: its INT8 ONNX copy) is shown beside byoc (its TorchScript) or byoc-cpu, so run byoc with them",
    )
    ap.add_argument(
        "--peer-sizing",
        default="2x1",
        help="the peers' workers x threads (WxT); several (2x1,1x2,2x2): a short sweep picks each peer's best",
    )
    ap.add_argument("--sweep-seconds", type=float, default=5.0, help="measured seconds of each sweep point")
    ap.add_argument(
        "--variants",
        default=DEFAULT_VARIANTS,
        help=f"byoc-serve settings to run besides the defaults (from {','.join(VARIANTS)}; '' for none)",
    )
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads for the in-process limit")
    ap.add_argument("--inprocess-seconds", type=float, default=3.0, help="seconds per in-process measurement")
    ap.add_argument("--no-inprocess", action="store_true", help="skip the in-process limit")
    ap.add_argument(
        "--cold-start-rounds", type=int, default=3, help="cold starts of each kind (real-time, serverless), interleaved"
    )
    ap.add_argument("--quick", action="store_true", help="a short smoke run (small loads, small training set)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument(
        "--work",
        type=Path,
        default=Path("/tmp/byoc-bench-work"),
        help="scratch folder for payloads, models and training data (kept between runs)",
    )
    return ap


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The options, checked and split into lists (args.suites: the suites to run); --quick shortens
    every load. Makes the work and output folders."""
    ap = parser()
    args = ap.parse_args(argv)
    args.payloads = args.payloads.split(",")
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.variants = [v for v in args.variants.split(",") if v]
    args.servers = [s for s in args.servers.split(",") if s]
    known = ["byoc", "torchserve", *serving.peer_labels()]
    unknown_servers = sorted(set(args.servers) - set(known))
    if unknown_servers:
        ap.error(f"unknown server(s) {', '.join(unknown_servers)}: choose from {', '.join(known)}")
    args.peer_sizing = [s for s in args.peer_sizing.split(",") if s]
    try:
        [serving.parse_sizing(s) for s in args.peer_sizing]
    except ValueError as exc:
        ap.error(f"--peer-sizing: {exc}")
    if set(args.variants) - set(VARIANTS):
        ap.error(f"unknown variant(s): choose from {', '.join(VARIANTS)}")
    if args.quick:
        args.seconds, args.warmup, args.inprocess_seconds = min(args.seconds, 3.0), min(args.warmup, 1.0), 1.0
        args.server_warmup, args.sweep_seconds = min(args.server_warmup, 3.0), min(args.sweep_seconds, 2.0)
        args.cold_start_rounds = 1
    args.suites = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(args.suites) - set(SUITES)
    if unknown:
        ap.error(f"unknown suite(s) {', '.join(sorted(unknown))}: choose from {', '.join(SUITES)}")
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    return args


@contextmanager
def stop_unwinds():
    """SIGTERM (`timeout`, `kill`, a CI job cancelled) and SIGHUP (the terminal gone) unwind the run
    as Ctrl-C does, so that every `finally` runs and removes its container: by default Python ends
    at once on them, and a server container would be left running."""

    def unwind(signum, _frame):
        signal.signal(signum, signal.SIG_IGN)  # one unwinding: a second signal must not cut the clean-up short
        raise SystemExit(128 + signum)  # the exit status a shell gives a process the signal ended

    previous = {sig: signal.signal(sig, unwind) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_suites(args, command: str) -> dict:
    """Every chosen suite in turn; a suite that fails is named in results["failures"], the others still run.
    Each suite's duration goes into results["suite_seconds"], the whole run's into results["seconds"]."""
    started = time.monotonic()
    failures: list[str] = []
    results: dict = {"machine": machine(), "command": command, "suite_seconds": {}}
    if "serving" in args.suites:
        with timing(results, "serving"):
            results["serving"] = run_serving(args, args.work, failures)
    if "coldstart" in args.suites:
        with timing(results, "coldstart"), suite("coldstart", "cold start", failures):
            results["cold_start"] = run_cold_starts(args, args.work)
    if "training" in args.suites:
        with timing(results, "training"), suite("training", "training", failures):
            run_training(args, results)
    if "precision" in args.suites:
        with timing(results, "precision"), suite("precision", "precision", failures):
            results["precision"] = run_precision(args, results)
            failures += [f"precision: {e}" for e in results["precision"]["errors"]]
    if "sizes" in args.suites or "precision" in args.suites:  # the CPU image's size is one of precision's figures
        with timing(results, "sizes"):
            results["sizes"] = sizes.run()
    results["targets"] = report.targets(results)
    results["failures"] = failures
    results["seconds"] = round(time.monotonic() - started, 1)
    log.info("bench took %s", report.durations(results))
    return results


@contextmanager
def timing(results: dict, name: str):
    """The block's duration, in results["suite_seconds"][name] (also when it fails)."""
    started = time.monotonic()
    try:
        yield
    finally:
        results["suite_seconds"][name] = round(time.monotonic() - started, 1)


@contextmanager
def suite(name: str, what: str, failures: list[str]):
    """A suite's failure is logged and named in `failures`: one suite cannot lose the others' results."""
    try:
        yield
    except Exception as exc:
        failures.append(f"{name}: {exc}")
        log.error("%s benchmark failed: %s", what, exc)


def run_training(args, results: dict) -> None:
    """The training suite into results["training"], then the demo model's top-1 through each decode
    pipeline of byoc-serve (kept apart: the training figures stand if this part fails)."""
    ensure_image("byoc-train:latest", "train")
    results["training"] = training.run(args.work, quick=args.quick)
    demo = results["training"]["demo"]
    # Decoders differ only on JPEG: the demo test split, upscaled and re-encoded.
    jpegs = accuracy.write_jpeg_test_set(Path(demo["test_split"]), args.work / "demo_test_jpeg", 256)
    results["training"]["decode_top1"] = serving.run_accuracy("byoc-serve:latest", Path(demo["model_dir"]), jpegs)
    log.info("top-1 per decode pipeline: %s", results["training"]["decode_top1"])


def run_precision(args, results: dict) -> dict:
    """TorchScript fp32 against ONNX Runtime fp32 and INT8, on the training suite's demo model when it
    ran, else on one trained now."""
    for image, what in (("byoc-serve:latest", "serve"), ("byoc-serve:cpu", "cpu"), ("byoc-train:latest", "train")):
        ensure_image(image, what)
    demo = results.get("training", {}).get("demo") or training.train_demo(args.work, quick=args.quick)
    return precision.run(args, args.work, demo, chosen_payloads(args, args.work))


def write_results(results: dict, out: Path) -> None:
    """results.json, summary.md and the plots into `out`; the tables on stdout."""
    (out / "results.json").write_text(json.dumps(results, indent=2))
    text = report.markdown(results)
    (out / "summary.md").write_text(text + "\n")
    for name, fn in (("serving.png", plot.serving), ("targets.png", plot.ratios)):
        try:
            fn(results, out / name)
        except Exception as exc:  # a plot is not worth losing the numbers
            log.error("plot %s failed: %s", name, exc)
    print(text)
    print(f"\nresults: {out}/results.json, summary.md, serving.png, targets.png ({results['seconds']:.0f} s)")


if __name__ == "__main__":
    sys.exit(main())
