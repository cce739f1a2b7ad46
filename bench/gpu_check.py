"""The GPU check: byoc's own training loop, DDP, serving runtimes and resume on CUDA, in minutes.

Runs from the source tree with torch and torchvision alone: no Docker, no network, no
sagemaker-training / sagemaker-inference / multi-model-server, ONNX or TensorBoard
(`bench/gpu_check.sh`, which sets PYTHONPATH=src:.). Its parts, each written to `--out` as it
finishes (a part that fails records its reason and the next one still runs):

  training    ResNet-50 with amp=auto and channels_last: one timed epoch of `byoc.training.loop` on
              synthetic tensors (the limit: no decoding) and one on a generated 224 px JPEG ImageFolder
              through `byoc.training.data` (the real data path); images/s of each, their ratio, and
              the precision amp=auto chose, with the facts it chose from;
  host_syncs  the host-device synchronisations per training step that CUDA's sync debug mode counts
              (a separate pass: the debug mode slows the steps it watches);
  ddp         `byoc.training.train.run` in 2 processes: on 2 GPUs over NCCL where present, else both on
              the one GPU over gloo (NCCL does not support two ranks on one device);
  serving     `byoc.serve.runtimes.TorchScriptRuntime` on the device, fp32 and fp16, at batch 1 and at
              the best batch: p50 ms and images/s;
  resume      a run stopped by SIGTERM mid-epoch and resumed against a straight run, in deterministic
              mode (cudnn.benchmark off, deterministic algorithms, CUBLAS_WORKSPACE_CONFIG), so the
              weights must be bit-identical.

`--device cpu --quick` runs every part on the CPU in about a minute (fp16 serving as bf16, the
host-sync count skipped: CUDA's debug mode is the counter); tests/test_gpu_check.py runs it in an
environment where the SageMaker toolkits cannot be imported. `--table FILE` prints a written
document as the markdown table the docs include.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
PARTS = ("training", "host_syncs", "ddp", "serving", "resume")
CLASSES = 10
# cuBLAS is deterministic only with a fixed workspace: https://docs.nvidia.com/cuda/cublas/#results-reproducibility
CUBLAS_DETERMINISTIC = ":4096:8"


# --------------------------------------------------------------------------- shared steps
def _job(root: Path, data_root: Path):
    from byoc.training.contract import Job

    return Job.one_host(root / "opt_ml", {"training": data_root}, os.cpu_count() or 1, torch.cuda.device_count())


def write_jpegs(root: Path, per_split: dict[str, int], classes: int, size: int) -> Path:
    """A dogImages-layout folder of random-texture JPEGs, `size` px on the short side."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in per_split.items():
        for i in range(count):
            folder = root / split / f"{i % classes + 1:03d}.class{i % classes}"
            folder.mkdir(parents=True, exist_ok=True)
            base = rng.integers(0, 255, (size // 8, size * 4 // 24, 3), dtype=np.uint8)
            Image.fromarray(base).resize((size * 4 // 3, size)).save(folder / f"{i:05d}.jpg", quality=90)
    return root


def _small_images(args, work: Path) -> Path:
    """The small JPEG set the DDP and resume parts train on (written once): 5 steps an epoch."""
    root = work / "small"
    if not root.exists():
        n = 5 * args.small_batch
        write_jpegs(root, {"train": n, "valid": n // 4, "test": n // 4}, classes=4, size=args.small_size * 9 // 8)
    return root


def _small_config(args, epochs: int):
    from byoc.training.contract import TrainConfig

    return TrainConfig(
        arch="resnet18",
        image_size=args.small_size,
        batch_size=args.small_batch,
        pretrained=False,
        epochs=epochs,
        log_every=2,
        amp="off" if args.device == "cpu" else "auto",
        channels_last="true",
        num_workers=0 if args.quick else 2,
    )


class Setup:
    """One training setup (model, optimisation, loaders) that the training and host-sync parts share."""

    def __init__(self, args, work: Path):
        from byoc.core.preprocessing import Preprocessing
        from byoc.training import data, distributed
        from byoc.training.contract import Amp, TrainConfig
        from byoc.training.train import build_model

        self.cfg = TrainConfig(
            arch=args.arch,
            image_size=args.image_size,
            batch_size=args.batch_size,
            pretrained=False,
            amp=Amp.OFF if args.device == "cpu" else Amp.AUTO,
            channels_last="true",
            epochs=1,
            log_every=50,
            num_workers=-1,
        )
        per_split = {"train": args.images, "valid": args.batch_size, "test": args.batch_size}
        images = write_jpegs(work / "jpegs", per_split, classes=CLASSES, size=args.image_size * 8 // 7)
        job = _job(work, images)
        self.rt = distributed.setup(job)
        self.loaders = data.build(job, self.cfg, self.rt, Preprocessing.for_size(args.image_size))
        self.net, self.opt = build_model(job, self.cfg, self.rt, self.loaders, saved_speed=None)
        self.steps = len(self.loaders.train)
        self.synthetic = self._synthetic()

    def _synthetic(self) -> list:
        """`steps` batches of random tensors (4 distinct ones, pinned like the loader's), no decoding."""
        g = torch.Generator().manual_seed(0)
        pin = self.rt.device.type == "cuda"
        fake = []
        for _ in range(min(self.steps, 4)):
            x = torch.randn(self.cfg.batch_size, 3, self.cfg.image_size, self.cfg.image_size, generator=g)
            y = torch.randint(0, CLASSES, (self.cfg.batch_size,), generator=g)
            fake.append((x.pin_memory() if pin else x, y.pin_memory() if pin else y, []))
        return [fake[i % len(fake)] for i in range(self.steps)]

    def epoch(self, loader) -> float:
        """Seconds for one epoch of the project's loop over `loader`, its totals read back at the end."""
        from byoc.training import monitor
        from byoc.training.distributed import StopAgreement, StopSignal
        from byoc.training.loop import EpochStats, train_one_epoch

        rules = monitor.Rules(scaled=self.opt.scaler.is_enabled())  # fp16's skipped steps are no explosion
        log = monitor.StepLog(self.cfg.log_every, rules, monitor.TensorBoard(None), self.rt, self.steps)
        stop = StopAgreement(StopSignal(), self.rt)
        stats = EpochStats.zeros(self.rt.device)
        start = time.perf_counter()
        train_one_epoch(self.net, loader, self.opt, self.rt, 0, stats, log, stop)
        stats.reduced(self.rt)  # the epoch's end reads the totals back: the queue is drained here
        return time.perf_counter() - start


def _amp_facts(setup: Setup) -> dict:
    """What amp=auto chose and the facts it chose from (the device's compute capability)."""
    chosen = setup.opt.speed.amp.value
    if setup.rt.device.type != "cuda":
        return {"amp": chosen, "amp_why": "amp=off: a CPU run checks the code paths, it measures nothing"}
    major, minor = torch.cuda.get_device_capability(setup.rt.device)
    return {
        "amp": chosen,
        "compute_capability": f"{major}.{minor}",
        "bf16_supported": torch.cuda.is_bf16_supported(),
        # cuDNN runs bf16 convolutions on tensor cores from sm_80 (Ampere) on; before that fp16 + GradScaler.
        "amp_why": f"amp=auto on sm_{major}{minor} chose {chosen} (bf16 from compute capability 8.0, else fp16)",
    }


# --------------------------------------------------------------------------- the parts
def train_throughput(args, work: Path, shared: dict) -> dict:
    """training: one timed epoch (after a warm-up one) on synthetic tensors and on JPEGs, the same loop."""
    setup = shared["setup"] = Setup(args, work)
    setup.epoch(setup.synthetic[: max(2, setup.steps // 4)])  # warm-up: cudnn.benchmark's search, allocator
    limit_s = setup.epoch(setup.synthetic)
    setup.epoch(setup.loaders.train)  # warm-up of the loader's workers and page cache
    data_s = setup.epoch(setup.loaders.train)
    n = setup.steps * setup.cfg.batch_size
    return {
        "arch": setup.cfg.arch,
        "batch_size": setup.cfg.batch_size,
        "image_size": setup.cfg.image_size,
        "steps": setup.steps,
        **_amp_facts(setup),
        "channels_last": setup.opt.speed.channels_last,
        "loader_workers": setup.loaders.workers,
        "synthetic_images_per_s": round(n / limit_s, 1),
        "jpeg_images_per_s": round(n / data_s, 1),
        "data_path_over_limit": round(limit_s / data_s, 3),
    }


def host_syncs(args, work: Path, shared: dict) -> dict:
    """host_syncs: an epoch on synthetic tensors under CUDA's sync debug mode, its warnings counted."""
    if args.device != "cuda":
        return {"host_syncs_per_step": None, "note": "counted on CUDA only (torch.cuda.set_sync_debug_mode)"}
    setup = shared.get("setup") or Setup(args, work)
    # https://pytorch.org/docs/stable/generated/torch.cuda.set_sync_debug_mode.html: "warn" warns once
    # per synchronizing operation.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            setup.epoch(setup.synthetic)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [str(w.message) for w in caught if "synchroniz" in str(w.message)]
    return {
        "steps": setup.steps,
        "host_syncs": len(syncs),
        "host_syncs_per_step": round(len(syncs) / setup.steps, 3),
        "first": syncs[0].splitlines()[0] if syncs else None,
    }


def ddp_run(args, work: Path, shared: dict) -> dict:
    """ddp: `train.run` in 2 processes, each rank's final weights compared (DDP keeps them equal)."""
    shared.clear()  # the training part's model and batches: the GPU's memory goes to the two ranks
    if args.device == "cuda":
        torch.cuda.empty_cache()
    gpus = torch.cuda.device_count() if args.device == "cuda" else 0
    images = _small_images(args, work.parent)
    port = _free_port()
    specs = [
        {"rank": r, "world": 2, "local_rank": r if gpus >= 2 else 0, "port": port, "images": str(images)}
        for r in range(2)
    ]
    # NCCL does not support two ranks on one device ("Using the same CUDA device multiple times as
    # different ranks of the same NCCL communicator is not supported":
    # https://docs.nvidia.com/deeplearning/nccl/user-guide/docs/api/comms.html#ncclcomminitrank), so one
    # GPU runs both ranks over gloo, which reduces CUDA tensors too.
    gloo_on_gpu = args.device == "cuda" and gpus < 2
    results = _workers("ddp", args, work, [{**s, "gloo_on_gpu": gloo_on_gpu} for s in specs])
    rank0, rank1 = results
    return {
        "processes": 2,
        "gpus": gpus,
        "backend": "gloo" if args.device == "cpu" or gloo_on_gpu else "nccl",
        "seconds": rank0["seconds"],
        "test_accuracy": rank0["test_accuracy"],
        "samples_per_rank": rank0["samples_per_rank"],
        "same_weights_on_both_ranks": rank0["final_weights_sha256"] == rank1["final_weights_sha256"],
    }


def serve_latency(args, work: Path, shared: dict) -> dict:
    """serving: the TorchScript runtime's forward pass on the device, fp32 and fp16, batch 1 and larger."""
    from byoc.core import artifact
    from byoc.core.architecture import build
    from byoc.core.preprocessing import Preprocessing
    from byoc.serve.runtimes import TorchScriptRuntime

    model_dir = work / "model"
    meta = artifact.ModelMeta(
        arch=args.arch, labels=[f"c{i}" for i in range(133)], preprocessing=Preprocessing.for_size(args.image_size)
    )
    artifact.save(model_dir, build(args.arch, 133).eval(), meta)
    device = "cuda:0" if args.device == "cuda" else "cpu"
    runtime = TorchScriptRuntime(model_dir, device, None)
    half = _half(model_dir, device)
    doc: dict[str, Any] = {"device": runtime.device, "runtime": runtime.name}
    doc["fp32"] = _batches(args, runtime.infer)
    doc[half["precision"]] = {**_batches(args, half["infer"]), "how": half["how"]}
    return doc


def _half(model_dir: Path, device: str) -> dict:
    """The artifact at half precision: fp16 with channels_last on CUDA; bf16 on a CPU (fp16 convolutions
    there are a slow fallback, not what a CPU server would run)."""
    from byoc.core import artifact

    dtype = torch.float16 if device.startswith("cuda") else torch.bfloat16
    # as a GPU worker serves it (byoc.serve.runtimes): cast before freezing, channels-last
    net, _ = artifact.load(model_dir, device, dtype=dtype, channels_last=True)

    def infer(images):
        with torch.inference_mode():
            x = torch.from_numpy(images).to(device, non_blocking=True)
            logits = net(x.to(dtype=dtype, memory_format=torch.channels_last))
            return torch.softmax(logits.float(), dim=1).cpu().numpy()

    return {
        "precision": "fp16" if dtype is torch.float16 else "bf16",
        "infer": infer,
        "how": f"served as byoc.serve.runtimes serves it: {str(dtype).removeprefix('torch.')}, channels_last",
    }


def _batches(args, infer: Callable) -> dict:
    """p50 ms and images/s of `infer` at each batch size (3 warm-up calls each), and the best batch."""
    rows = {}
    for batch in args.serve_batches:
        x = torch.randn(batch, 3, args.image_size, args.image_size).numpy()  # the handler's stages pass numpy
        times = []
        for i in range(args.serve_repeats + 3):
            start = time.perf_counter()
            infer(x)  # returns CPU probabilities: the device has finished
            if i >= 3:
                times.append(time.perf_counter() - start)
        p50 = statistics.median(times)
        rows[str(batch)] = {"p50_ms": round(p50 * 1e3, 2), "images_per_s": round(batch / p50, 1)}
    best = max(rows, key=lambda b: rows[b]["images_per_s"])
    return {"batch_1": rows["1"], "best_batch": int(best), "best": rows[best], "batches": rows}


def resume_check(args, work: Path, shared: dict) -> dict:
    """resume: SIGTERM at step 3 of epoch 0, resume, and compare with a straight run's weights."""
    [result] = _workers("resume", args, work, [{"images": str(_small_images(args, work.parent))}])
    return result


# --------------------------------------------------------------------------- worker processes
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _workers(kind: str, args, work: Path, specs: list[dict]) -> list[dict]:
    """Run `python -m bench.gpu_check --worker KIND` once per spec, at once; each one's result."""
    work.mkdir(parents=True, exist_ok=True)
    path = os.pathsep.join(filter(None, [str(REPO / "src"), str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    if kind == "resume":  # read when cuBLAS starts: set before the process touches CUDA
        env["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_DETERMINISTIC
    procs = []
    for i, spec in enumerate(specs):
        spec = {**spec, "device": args.device, "work": str(work), "result": str(work / f"{kind}-{i}.json")}
        path = work / f"{kind}-{i}.spec.json"
        path.write_text(json.dumps(spec))
        cmd = [sys.executable, "-m", "bench.gpu_check", "--device", args.device, "--worker", kind, "--spec", str(path)]
        procs.append((spec, subprocess.Popen(cmd, cwd=REPO, env=env)))
    codes = _wait_all([p for _, p in procs], args.worker_timeout)
    failed = [f"{kind} worker {i} {code}" for i, code in enumerate(codes) if code != "exited 0"]
    if failed:
        raise RuntimeError("; ".join(failed) + " (its traceback is above)")
    return [json.loads(Path(spec["result"]).read_text()) for spec, _ in procs]


def _wait_all(procs: list[subprocess.Popen], timeout_s: float) -> list[str]:
    """Wait for every process; once one fails or the time is up, kill the rest (a rank whose peer died
    would wait in its next collective for the process group's timeout, 10 minutes or more)."""
    deadline = time.monotonic() + timeout_s
    while None in (codes := [p.poll() for p in procs]):  # every one polled: each sets its returncode
        if any(code not in (None, 0) for code in codes) or time.monotonic() > deadline:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            break
        time.sleep(0.2)
    return [f"exited {p.returncode}" if p.returncode >= 0 else f"killed ({p.returncode})" for p in procs]


def ddp_worker(spec: dict, args) -> dict:
    """One rank of the ddp part: the environment torchrun would give it, then `train.run`."""
    import torch.distributed as dist

    from byoc.training import train

    os.environ.update(
        RANK=str(spec["rank"]),
        WORLD_SIZE=str(spec["world"]),
        LOCAL_RANK=str(spec["local_rank"]),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(spec["port"]),
    )
    if spec["gloo_on_gpu"]:
        from byoc.training import distributed

        real = dist.init_process_group
        dist.init_process_group = lambda *a, **kw: real("gloo", **kw)  # type: ignore[assignment]
        # both ranks on the one GPU: the job itself refuses a process without a GPU of its own
        distributed.choose_device = lambda facts, local_rank: torch.device("cuda:0")  # type: ignore[assignment]
    job = _job(Path(spec["work"]) / "ddp", Path(spec["images"]))
    start = time.monotonic()
    result = train.run(job, _small_config(args, epochs=1))
    return {**result, "seconds": round(time.monotonic() - start, 1)}


def resume_worker(spec: dict, args) -> dict:
    """The resume part, in its own process so its deterministic settings hold from CUDA's start."""
    from byoc.training import distributed, train
    from byoc.training.distributed import StopAgreement

    # https://pytorch.org/docs/stable/notes/randomness.html: deterministic algorithms, cudnn.benchmark off
    # (setup turns it on: its timing-based choice may differ between the two runs), a fixed cuBLAS workspace.
    torch.use_deterministic_algorithms(True, warn_only=True)
    real_setup = distributed.setup

    def deterministic_setup(job):
        rt = real_setup(job)
        torch.backends.cudnn.benchmark = False
        return rt

    distributed.setup = deterministic_setup  # type: ignore[assignment]
    work, images, cfg = Path(spec["work"]), Path(spec["images"]), _small_config(args, epochs=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        straight = train.run(_job(work / "straight", images), cfg)
        job = _job(work / "resumed", images)
        stopped = _stopped_at_step_3(lambda: train.run(job, cfg), StopAgreement, train.Interrupted)
        resumed = train.run(job, cfg)
    diff = _max_weight_diff(work / "straight" / "opt_ml" / "model", job.model_dir)
    return {
        "deterministic": True,
        "stopped_mid_epoch": stopped,
        "checkpoints": sorted(p.name for p in job.checkpoint_dir.glob("*.pt")),
        "same_weights": resumed["final_weights_sha256"] == straight["final_weights_sha256"],
        "max_abs_weight_diff": diff,
        "straight_test_accuracy": straight["test_accuracy"],
        "resumed_test_accuracy": resumed["test_accuracy"],
        "nondeterministic_ops": sorted(
            {str(w.message).splitlines()[0] for w in caught if "determinis" in str(w.message)}
        ),
    }


def _stopped_at_step_3(run: Callable, agreement: Any, interrupted: type[Exception]) -> bool:
    """Run `run()` with SIGTERM sent to this process at the third stop poll; whether it stopped."""
    real_poll, calls = agreement.poll, {"n": 0}

    def sigterm_at_step_3(self):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_poll(self)

    agreement.poll = sigterm_at_step_3
    before = signal.getsignal(signal.SIGTERM)
    try:
        run()
        return False
    except interrupted:
        return True
    finally:
        agreement.poll = real_poll
        signal.signal(signal.SIGTERM, before)


def _max_weight_diff(a: Path, b: Path) -> float:
    """The largest absolute difference between two artifacts' weights (model.pt)."""
    sa = torch.load(a / "model.pt", map_location="cpu", weights_only=True)
    sb = torch.load(b / "model.pt", map_location="cpu", weights_only=True)
    return max(
        (float((sa[k].double() - sb[k].double()).abs().max()) for k in sa if sa[k].is_floating_point()), default=0.0
    )


# --------------------------------------------------------------------------- the document
def table(doc: dict) -> str:
    """The document as a markdown table (what the docs include); a failed part shows its reason."""
    rows = [("device", f"{doc['device_name']} (torch {doc['torch']}{', quick' if doc.get('quick') else ''})")]
    for part in PARTS:
        got = doc.get(part)
        if got is None:
            rows.append((part, "not run"))
        elif "error" in got:
            rows.append((part, f"FAILED: {got['error']}"))
        else:
            rows.extend(_rows(part, got))
    rows.append(("seconds", doc.get("seconds", "")))
    cell = lambda v: str(v).replace("|", "\\|")  # noqa: E731
    return "\n".join(["| part | figure |", "| --- | --- |", *(f"| {cell(k)} | {cell(v)} |" for k, v in rows)])


def _rows(part: str, got: dict) -> list[tuple[str, Any]]:
    if part == "training":
        return [
            ("training: synthetic limit (img/s)", got["synthetic_images_per_s"]),
            ("training: JPEG data path (img/s)", got["jpeg_images_per_s"]),
            ("training: data path / limit", got["data_path_over_limit"]),
            ("training: arch / batch / channels_last", f"{got['arch']} / {got['batch_size']} / {got['channels_last']}"),
            ("training: amp", got["amp_why"]),
        ]
    if part == "host_syncs":
        return [
            (
                "host syncs per step",
                got["host_syncs_per_step"] if got["host_syncs_per_step"] is not None else got["note"],
            )
        ]
    if part == "ddp":
        return [
            ("ddp: 2 processes", f"{got['backend']} on {got['gpus']} GPU(s), {got['seconds']} s"),
            ("ddp: same weights on both ranks", got["same_weights_on_both_ranks"]),
        ]
    if part == "serving":
        return [
            (
                f"serving {p}: batch 1 p50 ms (img/s) / best batch {got[p]['best_batch']} p50 ms (img/s)",
                _serve_cell(got[p]),
            )
            for p in ("fp32", "fp16", "bf16")
            if p in got
        ]
    return [
        ("resume: stopped mid-epoch / same weights", f"{got['stopped_mid_epoch']} / {got['same_weights']}"),
        ("resume: max abs weight difference", got["max_abs_weight_diff"]),
    ]


def _serve_cell(row: dict) -> str:
    one, best = row["batch_1"], row["best"]
    return f"{one['p50_ms']} ({one['images_per_s']}) / {best['p50_ms']} ({best['images_per_s']})"


def _write(doc: dict, out: Path) -> None:
    """The document so far, replaced atomically: a crash in a later part leaves every earlier figure."""
    from byoc.core.files import atomic_write_text

    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(doc, indent=2) + "\n")


def run_parts(args, work: Path) -> dict:
    """Every part in order, the document written after each; a failed part holds {"error": reason}."""
    from byoc.core.errors import first_line

    doc: dict[str, Any] = {
        "device_name": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "torch": torch.__version__,
        "quick": args.quick,
    }
    started, shared = time.monotonic(), {}
    steps = {
        "training": train_throughput,
        "host_syncs": host_syncs,
        "ddp": ddp_run,
        "serving": serve_latency,
        "resume": resume_check,
    }
    for part in PARTS:
        part_start = time.monotonic()
        try:
            doc[part] = steps[part](args, work / part, shared)
        except Exception as exc:  # the next part still runs; the reason is in the document
            traceback.print_exc()
            doc[part] = {"error": first_line(exc)}
        doc[part]["part_seconds"] = round(time.monotonic() - part_start, 1)
        doc["seconds"] = round(time.monotonic() - started, 1)
        _write(doc, args.out)
        print(f"gpu_check: {part} done in {doc[part]['part_seconds']} s -> {args.out}", file=sys.stderr, flush=True)
    return doc


def _sizes(args) -> None:
    quick = args.quick
    args.arch = "resnet18" if quick else "resnet50"
    args.image_size = 32 if quick else 224
    args.batch_size = 8 if quick else 192
    args.images = 32 if quick else 192 * 24
    args.serve_batches = [1, 4] if quick else [1, 8, 32, 64, 128, 256]
    args.serve_repeats = 3 if quick else 30
    args.small_size = 32 if quick else 64  # the DDP and resume parts' ResNet-18 runs
    args.small_batch = 8 if quick else 32
    args.worker_timeout = 300


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: checks the code paths, measures nothing")
    ap.add_argument(
        "--out", type=Path, default=RESULTS / "gpu.json", help="the JSON document, rewritten after each part"
    )
    ap.add_argument("--table", type=Path, metavar="FILE", help="print FILE (a written document) as markdown and exit")
    ap.add_argument("--worker", choices=("ddp", "resume"), help=argparse.SUPPRESS)
    ap.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.table:
        print(table(json.loads(args.table.read_text())))
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device here; run with --device cpu --quick to check the code paths", file=sys.stderr)
        return 2
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the workers too
    _sizes(args)
    if args.worker:
        spec = json.loads(args.spec.read_text())
        result = (ddp_worker if args.worker == "ddp" else resume_worker)(spec, args)
        Path(spec["result"]).write_text(json.dumps(result))
        return 0
    with tempfile.TemporaryDirectory(prefix="byoc-gpu-check-") as tmp:
        doc = run_parts(args, Path(tmp))
    print(table(doc))
    return 1 if any("error" in doc[p] for p in PARTS) else 0


if __name__ == "__main__":
    sys.exit(main())
