"""Top-1 on a test set for each decode/preprocess pipeline: does a faster decode change answers?

Runs inside the serving image: `python3 -m bench.accuracy --model-dir M --data D` where D holds
class folders of JPEGs in the model's label order; prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from bench.inprocess import Pipelines


def top1(model_dir: Path, data: Path) -> dict:
    from byoc.core import artifact

    model, meta = artifact.load(model_dir, "cpu")
    pipes = Pipelines(meta.preprocessing)
    folders = sorted(p for p in data.iterdir() if p.is_dir())
    samples = [(f, i) for i, folder in enumerate(folders) for f in sorted(folder.glob("*.jpg"))]
    correct = {name: 0 for name in pipes.names}
    with torch.inference_mode():
        for name in pipes.names:
            fn = getattr(pipes, name)
            for start in range(0, len(samples), 64):
                chunk = samples[start : start + 64]
                x = torch.stack([fn(path.read_bytes()) for path, _ in chunk])
                pred = model(x).argmax(1)
                correct[name] += int((pred == torch.tensor([t for _, t in chunk])).sum())
    return {"images": len(samples), "top1": {k: round(v / max(1, len(samples)), 4) for k, v in correct.items()}}


def write_jpeg_test_set(png_split: Path, out: Path, size: int) -> Path:
    """The test split's images upscaled to `size` px and saved as JPEG (decoders differ only on JPEG)."""
    from PIL import Image

    for folder in sorted(p for p in png_split.iterdir() if p.is_dir()):
        dst = out / folder.name
        dst.mkdir(parents=True, exist_ok=True)
        for src in folder.iterdir():
            with Image.open(src) as img:
                img.convert("RGB").resize((size, size), Image.Resampling.BICUBIC).save(
                    dst / f"{src.stem}.jpg", quality=90
                )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    args = ap.parse_args(argv)
    print(json.dumps(top1(args.model_dir, args.data)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
