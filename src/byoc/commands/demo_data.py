"""`byoc demo-data DIR`: write the embedded demo dataset in the dogImages layout."""

from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("demo-data", help="write the embedded demo dataset (handwritten digits) as PNGs")
    p.add_argument("out", type=Path, help="output folder (gets train/, valid/, test/)")
    p.add_argument("--size", type=int, default=32, help="image side in pixels (default 32)")
    p.set_defaults(func=run)


def run(args) -> int:
    from byoc.data import write_demo_dataset

    counts = write_demo_dataset(args.out, size=args.size)
    print(f"wrote {sum(counts.values())} images to {args.out} ({', '.join(f'{k}={v}' for k, v in counts.items())})")
    return 0
