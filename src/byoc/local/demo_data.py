"""The embedded demo dataset (scikit-learn's handwritten digits) in the dogImages layout, and
`byoc demo-data DIR`, which writes it."""

from __future__ import annotations

from pathlib import Path

SPLITS = ("train", "valid", "test")


def register(sub) -> None:
    p = sub.add_parser("demo-data", help="write the embedded demo dataset (handwritten digits) as PNGs")
    p.add_argument("out", type=Path, help="output folder (gets train/, valid/, test/)")
    p.add_argument("--size", type=int, default=32, help="image side in pixels (default 32)")
    p.set_defaults(func=run)


def run(args) -> int:
    counts = write_demo_dataset(args.out, size=args.size)
    print(f"wrote {sum(counts.values())} images to {args.out} ({', '.join(f'{k}={v}' for k, v in counts.items())})")
    return 0


DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def write_demo_dataset(out: Path, size: int = 32, seed: int = 0) -> dict[str, int]:
    """Write scikit-learn's bundled handwritten digits (1,797 real 8x8 scans) as PNGs in the
    dogImages layout: out/{train,valid,test}/NN.name/*.png, split 70/15/15 per class."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    counts = {s: 0 for s in SPLITS}
    for cls in range(10):
        idx = np.flatnonzero(digits.target == cls)
        rng.shuffle(idx)
        n_test = n_valid = int(round(len(idx) * 0.15))
        parts = {"test": idx[:n_test], "valid": idx[n_test : n_test + n_valid], "train": idx[n_test + n_valid :]}
        for split, ids in parts.items():
            folder = out / split / f"{cls + 1:02d}.{DIGIT_NAMES[cls]}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in ids:
                pixels = (255 - digits.images[i] * (255 / 16)).clip(0, 255).astype("uint8")  # dark ink on white
                img = Image.fromarray(pixels).resize((size, size), Image.Resampling.BICUBIC)
                img.save(folder / f"digit_{i:04d}.png")
                counts[split] += 1
    return counts
