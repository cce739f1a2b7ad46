"""The in-process limit: decode + preprocess + forward in one Python process, no server.

Runs inside the serving image (same torch, same libraries) with bench/ mounted:
`python3 -m bench.inprocess --model-dir M --payloads P --threads 2` prints one JSON document;
with `--interactive` it measures on request (bench/serving.py drives it inside a running server's
container, between that server's load points).
"""

from __future__ import annotations

import argparse
import copy
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
    """Ways to turn JPEG bytes into a normalised 3xSxS tensor, all with the evaluation transform's
    semantics (byoc.core.preprocessing, bit-identical to torchvision's v2 pipeline). `names` lists those this
    image can run: tv_decode_jpeg needs torchvision, which the CPU serving image does not have."""

    def __init__(self, pre):
        from byoc.core.preprocessing import EvalTransform

        self.pre = pre
        self.transform = EvalTransform(pre)
        self.names = [
            n
            for n in ("pil_full", "pil_draft", "pil_draft_resize", "tv_decode_jpeg")
            if n != "tv_decode_jpeg" or _has_torchvision()
        ]

    def pil_full(self, data: bytes) -> torch.Tensor:
        """Full decode, then the evaluation transform (what training's evaluation does)."""
        from byoc.core.preprocessing import to_rgb

        return self.transform(to_rgb(Image.open(io.BytesIO(data))))

    def pil_draft(self, data: bytes) -> torch.Tensor:
        """libjpeg's reduced-DCT decode (1/2..1/8 scale, short side kept >= resize_size), then the same
        (what the server's handler does)."""
        from byoc.core.preprocessing import to_rgb

        img = Image.open(io.BytesIO(data))
        img.draft("RGB", (self.pre.resize_size, self.pre.resize_size))
        return self.transform(to_rgb(img))

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
        return x.sub_(self.transform.mean).div_(self.transform.std)

    def tv_decode_jpeg(self, data: bytes) -> torch.Tensor:
        """torchvision.io.decode_jpeg (libjpeg-turbo, full size), then the evaluation transform's tensor ops."""
        from torchvision.io import ImageReadMode, decode_jpeg

        from byoc.core.preprocessing import center_crop, resize

        raw = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        x = center_crop(resize(decode_jpeg(raw, mode=ImageReadMode.RGB), self.pre.resize_size), self.pre.image_size)
        return x.to(torch.float32).mul_(1.0 / 255).sub_(self.transform.mean).div_(self.transform.std)


def _has_torchvision() -> bool:
    try:
        import torchvision.io  # noqa: F401
    except ImportError:
        return False
    return True


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


class Limit:
    """The model loaded once (as the server loads it, and eager where torchvision exists); each
    method measures one part of the limit for one payload and returns JSON-ready figures."""

    def __init__(self, model_dir: Path, threads: int, seconds: float, batches: tuple[int, ...]):
        from byoc.core import artifact

        torch.set_num_threads(threads)
        self.seconds, self.batches = seconds, batches
        self.model, self.meta = artifact.load(model_dir, "cpu")
        self.pipes = Pipelines(self.meta.preprocessing)
        self.handler = serving_handler(model_dir)
        self.fmt = torch.contiguous_format
        s = self.meta.preprocessing.image_size
        x1 = torch.rand(1, 3, s, s)
        # The server's model (TorchScript, optimize_for_inference) against eager torchvision, where
        # the image has it: the limit is taken with whichever is fastest.
        forms = {"torchscript_optimized": (self.model, x1)}
        if _has_torchvision():
            eager, _ = artifact.load(model_dir, "cpu", torchscript=False)
            forms["eager"] = (eager, x1)
            forms["eager_channels_last"] = (
                copy.deepcopy(eager).to(memory_format=torch.channels_last),
                x1.contiguous(memory_format=torch.channels_last),
            )
        self.info: dict = {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "arch": self.meta.arch,
            "classes": self.meta.num_classes,
            "forward_ms": {},
        }
        with torch.inference_mode():
            for form, (net, x) in forms.items():
                self.info["forward_ms"][form] = self._median(lambda net=net, x=x: net(x))
        fastest = min(self.info["forward_ms"], key=self.info["forward_ms"].get)
        self.info["model_form"] = fastest
        self.model = forms[fastest][0]
        if fastest.endswith("channels_last"):
            self.fmt = torch.channels_last
        self._pipeline: dict[str, str] = {}

    def _median(self, fn, seconds: float | None = None, **kw) -> float:
        return round(statistics.median(timed(fn, self.seconds if seconds is None else seconds, **kw)), 1)

    def preprocess(self, data: bytes) -> dict:
        """Decode + preprocess (ms) per pipeline; the fastest is used by the other measurements."""
        pre = {p: self._median(lambda p=p: getattr(self.pipes, p)(data), self.seconds / 2) for p in self.pipes.names}
        self._pipeline[data] = min(pre, key=pre.get)
        return pre

    def _best_pipeline(self, data: bytes) -> str:
        if data not in self._pipeline:
            self.preprocess(data)
        return self._pipeline[data]

    def e2e(self, data: bytes) -> dict:
        """Decode + preprocess + forward + softmax at batch 1 with the fastest pipeline."""
        pipe = getattr(self.pipes, self._best_pipeline(data))

        def one():
            return self.model(pipe(data).unsqueeze(0).contiguous(memory_format=self.fmt)).softmax(1)

        with torch.inference_mode():
            cpu0 = time.process_time()
            runs = timed(one, self.seconds, warmup=0)
            # CPU time per image (all threads): less sensitive to a busy machine than wall time.
            cpu_ms = (time.process_time() - cpu0) * 1e3 / len(runs)
        return {
            "pipeline": self._best_pipeline(data),
            "ms": round(statistics.median(runs), 1),
            "cpu_ms": round(cpu_ms, 1),
        }

    def handler_ms(self, data: bytes) -> float | None:
        """byoc's own handler.predict: the server's code path minus the HTTP hops."""
        if self.handler is None:
            return None
        return self._median(lambda: self.handler.predict(data, {"content-type": "image/jpeg"}))

    def best_batch(self, data: bytes) -> dict:
        """Images/s at each batch size (decode + preprocess of every image included); the best."""
        pipe = getattr(self.pipes, self._best_pipeline(data))
        rates = {}
        with torch.inference_mode():
            for b in self.batches:

                def batch(b=b):
                    x = torch.stack([pipe(data) for _ in range(b)]).contiguous(memory_format=self.fmt)
                    return self.model(x).softmax(1)

                rates[b] = round(b * 1e3 / self._median(batch, min_runs=3, warmup=1), 2)
        top = max(rates, key=rates.get)
        return {"batch": top, "images_per_s": rates[top], "by_batch": rates}

    PARTS = ("preprocess", "e2e", "handler_ms", "best_batch")

    def run(self, data: bytes, parts=PARTS) -> dict:
        return {part: getattr(self, part)(data) for part in parts}


def measure(model_dir: Path, payloads: dict[str, Path], threads: int, seconds: float, batches: tuple[int, ...]) -> dict:
    """Every part for every payload, in one document (keyed as the report reads it)."""
    limit = Limit(model_dir, threads, seconds, batches)
    out = {**limit.info, "preprocess_ms": {}, "e2e_batch1_ms": {}, "best_batch": {}, "handler_ms": {}}
    for name, path in payloads.items():
        got = limit.run(path.read_bytes())
        out["preprocess_ms"][name], out["e2e_batch1_ms"][name] = got["preprocess"], got["e2e"]
        out["handler_ms"][name], out["best_batch"][name] = got["handler_ms"], got["best_batch"]
    return out


def interactive(limit: Limit, payloads: dict[str, Path]) -> None:
    """One JSON line out for each line in: `PAYLOAD PART [PART...]` (parts from Limit.PARTS).
    Lets the benchmark take the limit right before and after a server's load points."""
    print(json.dumps(limit.info), flush=True)
    for line in sys.stdin:
        name, *parts = line.split()
        print(json.dumps(limit.run(payloads[name].read_bytes(), parts or Limit.PARTS)), flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", type=Path, required=True)
    ap.add_argument("--payloads", type=Path, required=True, help="folder of photo_NAME.jpg files")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    ap.add_argument("--batches", default="1,2,4,8")
    ap.add_argument("--names", default="", help="comma-separated payload names (default: every photo_NAME.jpg)")
    ap.add_argument("--interactive", action="store_true", help="answer `PAYLOAD PART...` lines on stdin")
    args = ap.parse_args(argv)
    payloads = {p.stem.removeprefix("photo_"): p for p in sorted(args.payloads.glob("photo_*.jpg"))}
    if args.names:
        payloads = {n: payloads[n] for n in args.names.split(",")}
    batches = tuple(int(b) for b in args.batches.split(","))
    if args.interactive:
        interactive(Limit(args.model_dir, args.threads, args.seconds, batches), payloads)
    else:
        print(json.dumps(measure(args.model_dir, payloads, args.threads, args.seconds, batches)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
