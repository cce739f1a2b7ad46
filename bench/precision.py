"""The precision benchmark: one artifact served three ways on the same cores in one run:
byoc-serve:latest's TorchScript fp32 (the baseline), and byoc-serve:cpu's
ONNX Runtime copies, fp32 (`BYOC_PRECISION=fp32`) and INT8 (its default). Each gets the serving
benchmark's measurements (`serving.run_server`: latency per concurrency, saturated throughput,
memory per worker), cold starts interleaved with the others' (`serving.cold_starts`), and its top-1
on the demo model's held-out test split through its own HTTP answers (what each runtime really serves).

Speed is measured on the serving benchmark's ResNet-50 (the model the targets are about);
top-1 on the demo model trained by byoc-train, since random weights have no top-1 to lose and the
demo's 32 px ResNet-18 is too small for its speed to be the runtime's."""

from __future__ import annotations

import json
import logging
import mimetypes
from pathlib import Path

from bench import artifact, containers, httpload, serving

log = logging.getLogger("bench")
BASELINE = "torchscript-fp32"
INT8 = "onnx-int8"
# label -> (image, BYOC_PRECISION or None, the runtime its workers must report)
SERVERS = {
    BASELINE: ("byoc-serve:latest", None, "torchscript"),
    "onnx-fp32": ("byoc-serve:cpu", "fp32", "onnxruntime-fp32"),
    INT8: ("byoc-serve:cpu", "int8", "onnxruntime-int8"),
}
# The same sizing for all three, written out so that it cannot differ: byoc-serve's default on the
# benchmark's 2 cores (containers.CPUSET).
SIZING = {"SAGEMAKER_MODEL_SERVER_WORKERS": "2", "BYOC_TORCH_THREADS": "2"}
# For comparison only (not judged): the INT8 copy at other workers x threads, to see whether the
# default sizing (byoc.serve.sizing, measured with torch) still holds for ONNX Runtime's pool.
VARIANTS = {
    f"{INT8}-{w}w{t}t": {"SAGEMAKER_MODEL_SERVER_WORKERS": str(w), "BYOC_TORCH_THREADS": str(t)}
    for w, t in ((1, 2), (2, 1), (4, 1))
}


def servers(model_dir: Path, variants: bool = False) -> dict[str, serving.Server]:
    """The three servers of `model_dir` (and, with `variants`, VARIANTS), by label."""
    out = {}
    for label, (image, precision, _) in SERVERS.items():
        env = dict(SIZING, **({"BYOC_PRECISION": precision} if precision else {}))
        out[label] = serving.byoc_server(model_dir, image=image, label=label, env=env)
    for label, sizing in VARIANTS.items() if variants else ():
        env = dict(sizing, BYOC_PRECISION="int8")
        out[label] = serving.byoc_server(model_dir, image=SERVERS[INT8][0], label=label, env=env)
    return out


def check_runtime(label: str, runtime: str | None) -> str:
    """'' when `label`'s workers ran the runtime SERVERS names, else why the comparison is off."""
    image, _, expected = SERVERS[INT8 if label in VARIANTS else label]
    if runtime == expected:
        return ""
    return f"{label} ran {runtime or 'an unreported runtime'}, not {expected} (rebuild {image}: build_images.sh)"


def run(args, work: Path, demo: dict, photos: dict[str, Path]) -> dict:
    """Load points, cold starts and top-1 of the three servers; `demo` is bench.training.train_demo's."""
    model_dir = artifact.write_served(work)
    out: dict = {
        "model": {"arch": artifact.ARCH, "classes": artifact.CLASSES, "image_size": artifact.IMAGE_SIZE},
        "baseline": BASELINE,
        "judged": INT8,  # the CPU image as shipped: INT8 where the artifact has the copy
        "variants": list(VARIANTS),  # load points only, not judged
        "payloads": list(photos),
        "sizing": SIZING,
        "concurrency": list(args.concurrency),
        "seconds_per_point": args.seconds,
        "servers": [],
        "errors": [],
    }
    for server in servers(model_dir, variants=True).values():
        result = serving.run_server(
            server, photos, tuple(args.concurrency), args.seconds, args.warmup, work, server_warmup=args.server_warmup
        )
        result.error = result.error or check_runtime(server.label, result.runtime)
        if result.error:
            out["errors"].append(f"{server.label}: {result.error.splitlines()[0]}")
        out["servers"].append(result.to_json())
    first = next(iter(photos.values())).read_bytes()
    try:  # one failed part must not lose the others' figures
        out["cold_start"] = serving.cold_starts(servers(model_dir), first, work, args.cold_start_rounds)
    except Exception as exc:
        out["errors"].append(f"cold starts: {str(exc).splitlines()[0]}")
    try:
        out["top1"] = top1(Path(demo["model_dir"]), Path(demo["dataset"]), first, work)
        out["top1"]["test_accuracy_at_training"] = demo["test_accuracy"]
    except Exception as exc:
        out["errors"].append(f"top-1: {str(exc).splitlines()[0]}")
    for error in out["errors"]:
        log.error("precision: %s", error)
    return out


def top1(model_dir: Path, dataset: Path, warm_body: bytes, work: Path) -> dict:
    """Each server's top-1 (percent) on `dataset`/test, the demo model given its ONNX copies
    (calibrated on `dataset`'s valid split) where the training image did not write them."""
    from byoc.core import quantize
    from byoc.core.model_meta import read_meta

    artifact.add_onnx_copies(model_dir, dataset)
    images = quantize.labelled_images(dataset / "test", read_meta(model_dir).labels)
    by_server = {label: served_top1(server, images, warm_body, work) for label, server in servers(model_dir).items()}
    log.info("top-1 on %d held-out demo images: %s", len(images), by_server)
    return {"images": len(images), "by_server": by_server}


def served_top1(server: serving.Server, images: list, warm_body: bytes, work: Path) -> float:
    """Top-1 (percent) of `server`, started on its own, over `images` (byoc.core.quantize.Labelled)."""
    port = containers.free_port()
    opts, args = server.setup(work, port)
    base = f"http://127.0.0.1:{port}"
    with containers.running(server.image, args, opts, server.label) as (name, started):
        serving.time_cold_start(server, base, warm_body, name, started, 300)
        return answered_top1(base + server.invoke, images)


def answered_top1(url: str, images: list) -> float:
    """Top-1 (percent) of the first answers of the server at `url`, one POST per image."""
    correct = 0
    for image in images:
        kind = mimetypes.guess_type(image.path.name)[0] or "application/x-image"
        status, body = httpload.fetch(url, image.path.read_bytes(), kind)
        if status != 200:
            raise RuntimeError(f"{url}: {image.path} answered {status}: {body[:200]!r}")
        correct += json.loads(body)["predictions"][0]["index"] == image.target
    return round(100 * correct / len(images), 2)
