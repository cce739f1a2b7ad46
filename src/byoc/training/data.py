"""Datasets, transforms and class-name cleaning for the training channels.

Layout (the dogImages layout): one channel `training` with `train/`, `valid/`
and `test/` folders of class folders (`train/001.Affenpinscher/*.jpg`), or
separate channels `train`, `validation` and `test` holding class folders.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import v2 as T

from byoc.core.errors import DataError
from byoc.core.preprocessing import Preprocessing, eval_transform, open_image

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
# Folder names accepted for each split inside one channel, and channel names for each split.
SPLIT_DIR_NAMES = {"train": ("train", "training"), "valid": ("valid", "validation", "val"), "test": ("test", "testing")}
SPLIT_CHANNELS = {"train": ("train",), "valid": ("validation", "valid", "val"), "test": ("test",)}
COMBINED_CHANNELS = ("training", "data", "dataset")
_PREFIX = re.compile(r"^\d+[._\-\s]+")
# Pillow's own bomb limit (2 x its warning threshold), so a dataset reads as it always did; an image
# over it is skipped and counted like any unreadable file.
MAX_TRAIN_PIXELS = 2 * 89_478_485


def clean_class_name(folder: str) -> str:
    """`001.Affenpinscher` -> `Affenpinscher` (a name that is only digits is kept)."""
    cleaned = _PREFIX.sub("", folder).strip()
    return cleaned or folder


def image_extensions() -> tuple[str, ...]:
    Image.init()
    return tuple(sorted(ext.lower() for ext in Image.registered_extensions()))


def _child_dir(parent: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        for candidate in (parent / name, parent / name.capitalize(), parent / name.upper()):
            if candidate.is_dir():
                return candidate
    return None


def find_splits(channels: dict[str, Path]) -> dict[str, Path]:
    """Map train/valid/test to folders of class folders, from whichever channel layout is used."""
    splits: dict[str, Path] = {}
    for split, names in SPLIT_CHANNELS.items():
        for name in names:
            if name in channels:
                splits[split] = channels[name]
                break
    for name in COMBINED_CHANNELS:
        root = channels.get(name)
        if root is None or not root.is_dir():
            continue
        # An archive unpacked as-is puts everything one level down (dogImages/train/...).
        subdirs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
        if _child_dir(root, SPLIT_DIR_NAMES["train"]) is None and len(subdirs) == 1:
            root = subdirs[0]
        for split, names in SPLIT_DIR_NAMES.items():
            found = _child_dir(root, names)
            if found is not None:
                splits.setdefault(split, found)
    missing = [s for s in SPLITS if s not in splits]
    if missing:
        have = ", ".join(f"{k}={v}" for k, v in sorted(channels.items())) or "none"
        raise DataError(
            f"missing data for split(s) {', '.join(missing)} (channels: {have}). Provide a channel "
            "'training' holding train/, valid/ and test/ folders of class folders (the dogImages "
            "layout), or channels 'train', 'validation' and 'test' each holding class folders."
        )
    for split, path in splits.items():
        if not path.is_dir():
            raise DataError(f"the {split} data folder {path} does not exist: is the channel's S3 prefix right?")
    return splits


@dataclass
class Sample:
    path: Path
    target: int


def scan_split(folder: Path, class_folders: list[str] | None = None) -> tuple[list[str], list[Sample]]:
    """Class folders and image files of one split. `class_folders` pins the class order (from train)."""
    exts = image_extensions()
    found = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if class_folders is None:
        class_folders = found
    else:
        extra = sorted(set(found) - set(class_folders))
        if extra:
            raise DataError(
                f"{folder} has class folder(s) not in the training set: {', '.join(extra[:5])}"
                f"{' ...' if len(extra) > 5 else ''}. Every class must have training images."
            )
    index = {name: i for i, name in enumerate(class_folders)}
    samples = []
    for name in found:
        for path in sorted((folder / name).rglob("*")):
            if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in exts:
                samples.append(Sample(path, index[name]))
    if not samples:
        raise DataError(
            f"{folder} holds no images (looked for {', '.join(exts[:8])} ... inside class folders). "
            "Is the channel empty or its layout different?"
        )
    return class_folders, samples


def train_transform(pre: Preprocessing, augment: bool = True) -> T.Compose:
    steps: list = [T.ToImage()]
    if augment:
        steps += [T.RandomResizedCrop(pre.image_size, scale=(0.35, 1.0), antialias=True), T.RandomHorizontalFlip()]
    else:
        steps += [T.Resize(pre.resize_size, antialias=True), T.CenterCrop(pre.image_size)]
    steps += [T.ToDtype(torch.float32, scale=True), T.Normalize(pre.mean, pre.std)]
    return T.Compose(steps)


class ImageFolderSplit(Dataset):
    """Images of one split. An unreadable file is reported by path (third item) and either
    yields no image (skipped by `collate`) or, with `substitute`, a neighbouring readable one,
    so that every training batch keeps its size: DDP ranks must run the same number of steps."""

    def __init__(self, samples: list[Sample], transform, draft_size: int | None = None, substitute: bool = False):
        self.samples = samples
        self.transform = transform
        self.draft_size = draft_size
        self.substitute = substitute

    def __len__(self) -> int:
        return len(self.samples)

    def _read(self, i: int):
        sample = self.samples[i]
        return self.transform(open_image(sample.path, MAX_TRAIN_PIXELS, self.draft_size)), sample.target

    def __getitem__(self, i: int):
        try:
            return (*self._read(i), "")
        except Exception as exc:  # corrupt, truncated or not really an image
            bad = str(self.samples[i].path)
            log.debug("cannot read %s: %s", bad, exc)
        if self.substitute:
            for j in range(1, min(len(self.samples), 16)):
                try:
                    return (*self._read((i + j) % len(self.samples)), bad)
                except Exception:
                    continue
        return None, self.samples[i].target, bad


def collate(batch):
    """Stack the readable images; report the unreadable files by path."""
    good = [(x, y) for x, y, _ in batch if x is not None]
    bad = [p for _, _, p in batch if p]
    if not good:
        return None, None, bad
    xs, ys = zip(*good)
    return torch.stack(xs), torch.tensor(ys), bad


@dataclass
class Splits:
    class_folders: list[str]
    labels: list[str]
    train: ImageFolderSplit
    valid: ImageFolderSplit
    test: ImageFolderSplit


def load(channels: dict[str, Path], pre: Preprocessing, augment: bool = True) -> Splits:
    """Scan the channels into train/valid/test datasets with one class order."""
    folders = find_splits(channels)
    class_folders, train_samples = scan_split(folders["train"])
    _, valid_samples = scan_split(folders["valid"], class_folders)
    _, test_samples = scan_split(folders["test"], class_folders)
    labels = [clean_class_name(c) for c in class_folders]
    if len(set(labels)) != len(labels):  # cleaning must not merge two classes
        labels = list(class_folders)
    draft = pre.resize_size
    return Splits(
        class_folders=class_folders,
        labels=labels,
        train=ImageFolderSplit(train_samples, train_transform(pre, augment), draft, substitute=True),
        valid=ImageFolderSplit(valid_samples, eval_transform(pre), draft),
        test=ImageFolderSplit(test_samples, eval_transform(pre), draft),
    )
