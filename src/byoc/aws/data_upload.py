"""`byoc data upload DIR s3://BUCKET/PREFIX`: one's own image folder as training data on S3.

The folder is checked first, as the training image will read it (byoc.core.data_layout): train/,
valid/ and test/ folders of class folders, or one folder holding them; every image must decode.
Only then is anything uploaded, and only the files S3 does not already hold (byoc.aws.s3data's
size, MD5 and SHA-256 comparison), so a rerun after adding images sends just those.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from byoc.aws import s3data
from byoc.aws.session import Aws, say
from byoc.core.cli_kit import table
from byoc.core.data_layout import SPLIT_DIR_NAMES, split_folder, splits_root
from byoc.core.errors import ConfigError, DataError

# Without Pillow, the formats the training image reads are told by their first bytes.
MAGIC = {
    ".jpg": (b"\xff\xd8\xff",),
    ".jpeg": (b"\xff\xd8\xff",),
    ".png": (b"\x89PNG\r\n\x1a\n",),
    ".gif": (b"GIF87a", b"GIF89a"),
    ".bmp": (b"BM",),
    ".webp": (b"RIFF",),
    ".tif": (b"II*\x00", b"MM\x00*"),
    ".tiff": (b"II*\x00", b"MM\x00*"),
}


@dataclass
class Split:
    """One split's folder, its images by class folder, and the files it refuses."""

    folder: Path
    classes: dict[str, list[Path]] = field(default_factory=dict)
    others: int = 0  # files that are not images by their extension (not uploaded, not read by training)

    @property
    def images(self) -> list[Path]:
        return [p for files in self.classes.values() for p in files]


def upload(aws: Aws, folder: Path, uri: str, workers: int = 16) -> str:
    """The whole `byoc data upload` step; returns the S3 URI for --data."""
    bucket, prefix = _target(uri)
    root, splits = check(folder)
    s3data.ensure_bucket(aws, bucket)
    files = [p for split in splits.values() for p in split.images]
    s3data.upload_tree(aws, root, bucket, prefix, workers, files=files)
    uri = f"s3://{bucket}/{prefix}"
    say(f"training data ready: {uri}  (pass it to `byoc train-job --data {uri}`)")
    return uri


def _target(uri: str) -> tuple[str, str]:
    """(bucket, prefix) of s3://BUCKET/PREFIX; the prefix is required (the data gets a folder of its own)."""
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    if not uri.startswith("s3://") or not bucket or not prefix.strip("/"):
        raise ConfigError(f"{uri!r}: expected s3://BUCKET/PREFIX, e.g. s3://my-bucket/flowers")
    return bucket, prefix.strip("/")


def check(folder: Path) -> tuple[Path, dict[str, Split]]:
    """The folder holding the splits, and each split's images, printed as a table; DataError (after
    one line per unreadable image on stderr) when the layout or any image is wrong."""
    root = _root(folder)
    splits = {name: _scan(split_folder(root, name)) for name in SPLIT_DIR_NAMES}  # type: ignore[arg-type]
    _check_classes(root, splits)
    say(f"data {root}:")
    rows = [(s.folder.name + "/", len(s.classes), len(s.images), s.others) for s in splits.values()]
    say("\n".join(table(("split", "classes", "images", "other files"), rows, right=(False, True, True, True))))
    bad = [line for split in splits.values() for line in _unreadable(split.images)]
    for line in bad:
        print(line, file=sys.stderr)
    if bad:
        raise DataError(
            f"{len(bad)} file(s) under {root} cannot be read as images: fix or remove them (nothing uploaded)"
        )
    return root, splits


def _root(folder: Path) -> Path:
    """`folder`, or the one folder inside it that holds the splits (an archive unpacked as-is)."""
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder")
    root = splits_root(folder)
    missing = [f"{name}/" for name in SPLIT_DIR_NAMES if split_folder(root, name) is None]
    if missing:
        raise DataError(
            f"{folder}: no {', '.join(missing)} folder; training needs train/, valid/ and test/, each holding "
            "one folder per class (train/001.Affenpinscher/1.jpg)"
        )
    return root


def _scan(folder: Path) -> Split:
    """A split's class folders and their images (hidden files skipped)."""
    split = Split(folder)
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(p for p in class_dir.rglob("*") if p.is_file() and not p.name.startswith("."))
        images = [p for p in files if p.suffix.lower() in MAGIC]
        split.others += len(files) - len(images)
        if images:
            split.classes[class_dir.name] = images
    return split


def _check_classes(root: Path, splits: dict[str, Split]) -> None:
    """Every split has class folders with images; every class in valid/ and test/ has training images."""
    empty = [f"{s.folder.name}/" for s in splits.values() if not s.classes]
    if empty:
        raise DataError(f"{root}: {', '.join(empty)} holds no class folders with images (expected SPLIT/CLASS/IMAGE)")
    extra = sorted((set(splits["valid"].classes) | set(splits["test"].classes)) - set(splits["train"].classes))
    if extra:
        raise DataError(
            f"{root}: class folder(s) in valid/ or test/ but not in train/: {', '.join(extra[:5])}"
            f"{' ...' if len(extra) > 5 else ''} (every class needs training images)"
        )


def _unreadable(images: list[Path]) -> list[str]:
    """One line per image that cannot be read: decoded by Pillow where it is installed, else told by
    its first bytes."""
    pillow = _pillow()
    lines = []
    for path in images:
        problem = _decode_problem(pillow, path) if pillow is not None else _magic_problem(path)
        if problem:
            lines.append(f"{path}: {problem}")
    return lines


def _pillow() -> ModuleType | None:
    """PIL.Image where Pillow is installed (the AWS commands do not need it)."""
    try:
        from PIL import Image
    except ImportError:
        return None
    return Image


def _decode_problem(image_module, path: Path) -> str | None:
    try:
        with image_module.open(path) as img:
            img.verify()  # reads the whole file without decoding the pixels
    except Exception as exc:  # Pillow raises many types for a corrupt file
        return f"not a readable image ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    return None


def _magic_problem(path: Path) -> str | None:
    try:
        with path.open("rb") as fh:
            head = fh.read(12)
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    expected = MAGIC[path.suffix.lower()]
    if not head.startswith(expected) or (path.suffix.lower() == ".webp" and head[8:12] != b"WEBP"):
        return f"not a {path.suffix.lower().lstrip('.')} image (its first bytes are {head[:4].hex()})"
    return None
