"""The in-process limit: decode + preprocess + forward in one Python process, no server.

Runs inside the serving image (same torch, same libraries) with bench/ mounted:
`python3 -m bench.inprocess --model-dir M --payloads P --threads 2` prints one JSON document.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def timed(fn, seconds: float, min_runs: int = 5, warmup: int = 2) -> list[float]:
    """Durations (ms) of `fn()` repeated for about `seconds` after `warmup` runs."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    stop = time.perf_counter() + seconds
    while len(times) < min_runs or time.perf_counter() < stop:
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return times


class Pipelines:
    """Ways to turn JPEG bytes into a normalised 1x3xSxS tensor, all with eval_transform's semantics."""

    def __init__(self, pre):
        from torchvision.transforms import v2 as T

        self.pre = pre
        self.tensor_tf = T.Compose([T.Resize(pre.resize_size, antialias=True), T.CenterCrop(pre.image_size),
                                    T.ToDtype(torch.float32, scale=True), T.Normalize(pre.mean, pre.std)])
        self.mean = torch.tensor(pre.mean).view(3, 1, 1)
        self.std = torch.tensor(pre.std).view(3, 1, 1)

    def pil_full(self, data: bytes) -> torch.Tensor:
        """Full decode, torchvision transforms (what training's eval_transform does)."""
        from torchvision.transforms.v2 import functional as F

        img = Image.open(io.BytesIO(data)).convert("RGB")
        return self.tensor_tf(F.pil_to_tensor(img))

    def pil_draft(self, data: bytes) -> torch.Tensor:
        """libjpeg's reduced-DCT decode (1/2..1/8 scale, short side kept >= resize_size), then the same."""
        from torchvision.transforms.v2 import functional as F

        img = Image.open(io.BytesIO(data))
        img.draft("RGB", (self.pre.resize_size, self.pre.resize_size))
        return self.tensor_tf(F.pil_to_tensor(img.convert("RGB")))

    def pil_draft_resize(self, data: bytes) -> torch.Tensor:
        """Draft decode, Pillow's resize and crop on uint8 before any float conversion."""
        img = Image.open(io.BytesIO(data))
        img.draft("RGB", (self.pre.resize_size, self.pre.resize_size))
        img = img.convert("RGB")
        w, h = img.size
        short = self.pre.resize_size  # torchvision's rounding: the long side is truncated
        size = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
        img = img.resize(size, Image.Resampling.BILINEAR)
        s = self.pre.image_size
        left, top = int(round((size[0] - s) / 2)), int(round((size[1] - s) / 2))  # as CenterCrop
        img = img.crop((left, top, left + s, top + s))
        x = torch.from_numpy(np.array(img)).permute(2, 0, 1).float().div_(255)
        return x.sub_(self.mean).div_(self.std)

    def tv_decode_jpeg(self, data: bytes) -> torch.Tensor:
        """torchvision.io.decode_jpeg (libjpeg-turbo, full size), then the tensor transforms."""
        from torchvision.io import decode_jpeg

        raw = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        return self.tensor_tf(decode_jpeg(raw, mode=torchvision_rgb()))

    NAMES = ("pil_full", "pil_draft", "pil_draft_resize", "tv_decode_jpeg")


def torchvision_rgb():
    from torchvision.io import ImageReadMode

    return ImageReadMode.RGB


def serving_handler(model_dir: Path):
    """byoc's serving handler loaded in this process, or None where the image has none."""
    try:
        from byoc.serve.config import ServeConfig
        from byoc.serve.handler import ImageClassifierHandler
    except ImportError:
        return None
    handler = ImageClassifierHandler(ServeConfig(model_dir=model_dir))
    handler.load(model_dir, torch.device("cpu"))
    return handler


def measure(model_dir: Path, payloads: dict[str, Path], threads: int, seconds: float,
            batches: tuple[int, ...]) -> dict:
    from byoc import artifact

    torch.set_num_threads(threads)
    model, meta = artifact.load(model_dir, "cpu")
    pipes = Pipelines(meta.preprocessing)
    s = meta.preprocessing.image_size
    out: dict = {"torch": torch.__version__, "threads": torch.get_num_threads(), "arch": meta.arch,
                 "classes": meta.num_classes, "forward_ms": {}, "preprocess_ms": {}, "e2e_batch1_ms": {},
                 "best_batch": {}}
    handler = serving_handler(model_dir)
    with torch.inference_mode():
        x1 = torch.rand(1, 3, s, s)
        out["forward_ms"]["batch1"] = round(statistics.median(timed(lambda: model(x1), seconds)), 1)
        model_cl = model.to(memory_format=torch.channels_last)
        x1_cl = x1.contiguous(memory_format=torch.channels_last)
        out["forward_ms"]["batch1_channels_last"] = round(statistics.median(timed(lambda: model_cl(x1_cl), seconds)), 1)
        model = model.to(memory_format=torch.contiguous_format)
        for name, path in payloads.items():
            data = path.read_bytes()
            pre = {p: round(statistics.median(timed(lambda p=p: getattr(pipes, p)(data), seconds / 2)), 1)
                   for p in Pipelines.NAMES}
            out["preprocess_ms"][name] = pre
            best = min(pre, key=pre.get)

            def one(best=best, data=data):
                return model(getattr(pipes, best)(data).unsqueeze(0)).softmax(1)

            cpu0 = time.process_time()
            runs = timed(one, seconds, warmup=0)
            # CPU time per image (all threads): less sensitive to a busy machine than wall time.
            cpu_ms = (time.process_time() - cpu0) * 1e3 / len(runs)
            out["e2e_batch1_ms"][name] = {"pipeline": best, "ms": round(statistics.median(runs), 1),
                                          "cpu_ms": round(cpu_ms, 1)}
            if handler is not None:  # the server's own code path, minus the HTTP hops
                out.setdefault("handler_ms", {})[name] = round(statistics.median(timed(
                    lambda data=data: handler.predict(data, {"content-type": "image/jpeg"}), seconds)), 1)
            rates = {}
            for b in batches:
                def batch(b=b, best=best, data=data):
                    return model(torch.stack([getattr(pipes, best)(data) for _ in range(b)])).softmax(1)

                ms = statistics.median(timed(batch, seconds, min_runs=3, warmup=1))
                rates[b] = round(b * 1e3 / ms, 2)
            top = max(rates, key=rates.get)
            out["best_batch"][name] = {"batch": top, "images_per_s": rates[top], "by_batch": rates}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", type=Path, required=True)
    ap.add_argument("--payloads", type=Path, required=True, help="folder of photo_NAME.jpg files")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    ap.add_argument("--batches", default="1,2,4,8")
    ap.add_argument("--names", default="", help="comma-separated payload names (default: every photo_NAME.jpg)")
    args = ap.parse_args(argv)
    payloads = {p.stem.removeprefix("photo_"): p for p in sorted(args.payloads.glob("photo_*.jpg"))}
    if args.names:
        payloads = {n: payloads[n] for n in args.names.split(",")}
    result = measure(args.model_dir, payloads, args.threads, args.seconds,
                     tuple(int(b) for b in args.batches.split(",")))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
