"""Datasets, transforms and class-name cleaning for the training channels.

Layout (the dogImages layout): one channel `training` with `train/`, `valid/`
and `test/` folders of class folders (`train/001.Affenpinscher/*.jpg`), or
separate channels `train`, `validation` and `test` holding class folders.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms import v2 as T

from byoc.core.data_layout import SPLIT_DIR_NAMES, split_folder, splits_root
from byoc.core.errors import DataError
from byoc.core.preprocessing import Preprocessing, eval_transform, open_image
from byoc.training.contract import Job, TrainConfig
from byoc.training.distributed import Runtime, cores_per_process

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
# Folder names accepted for each split inside one channel, and channel names for each split.
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
        root = splits_root(root)
        for split in SPLIT_DIR_NAMES:
            found = split_folder(root, split)
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


def train_transform(pre: Preprocessing, augment: bool = True) -> Callable[[Image.Image], torch.Tensor]:
    """Random crop (35-100% of the area, aspect 3:4-4:3) resized to `image_size` and a flip; without
    `augment`, the evaluation transform. Both are bounded in memory whatever the image's shape:
    RandomResizedCrop crops before it resizes (a 40000x1 image falls back to a 1x1 crop), and
    `eval_transform` resizes only the window its centre crop keeps (byoc.core.preprocessing)."""
    if not augment:
        return eval_transform(pre)
    return T.Compose(
        [
            T.ToImage(),
            T.RandomResizedCrop(pre.image_size, scale=(0.35, 1.0), antialias=True),
            T.RandomHorizontalFlip(),
            T.ToDtype(torch.float32, scale=True),
            T.Normalize(pre.mean, pre.std),
        ]
    )


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
    xs, ys = zip(*good, strict=True)
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


class ShardSampler(Sampler):
    """This rank's share of an epoch, reshuffled per epoch (seed + epoch).

    Training (`shuffle=True`) pads the order to a multiple of the world size, as
    DistributedSampler does, so that every rank runs the same number of steps (DDP
    requires it), and yields (epoch, index) so the dataset can seed augmentation per
    sample: the same image gets the same crop in an interrupted-and-resumed run as in a
    straight one, whichever worker loads it. Evaluation does not pad: every image
    counts exactly once.
    """

    def __init__(self, size: int, rank: int, world: int, seed: int, shuffle: bool):
        self.size, self.rank, self.world, self.seed, self.shuffle = size, rank, world, seed, shuffle
        self.epoch = 0
        self.skip = 0  # samples of this epoch already trained before an interruption

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def indices(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.size))[self.rank :: self.world]
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.size, generator=g).tolist()
        padded = -(-self.size // self.world) * self.world
        order += order[: padded - self.size]
        return order[self.rank :: self.world]

    def __iter__(self):
        for i in self.indices()[self.skip :]:
            yield (self.epoch, i) if self.shuffle else i

    def __len__(self) -> int:
        return max(0, len(self.indices()) - self.skip)


class SeededDataset(torch.utils.data.Dataset):
    """Wraps a split so that random augmentation is a function of (seed, epoch, index)."""

    def __init__(self, inner: ImageFolderSplit, seed: int):
        self.inner, self.seed = inner, seed

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, key):
        epoch, i = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((self.seed * 1_000_003 + epoch) * 10_000_019 + i)
            return self.inner[i]


def num_workers(cfg: TrainConfig, job: Job, rt: Runtime) -> int:
    """Data loader processes: `num-workers`, else cores per process - 1 (1 to 8) on a GPU, and on
    the CPU one per 4 cores (none below 4). The CPU model's threads use every core, and a loader
    process on a core they need stalls every parallel op, not only its share: ResNet-18 at 224 px
    on 2 cores ran an epoch in 24.1-25.2 s with 1 worker and 21.2-21.9 s with none (synthetic
    tensors, no loading at all: 21.0 s), while decoding and augmenting took 1.2 ms an image."""
    if cfg.num_workers >= 0:
        return cfg.num_workers
    cores = cores_per_process(job, rt)
    if rt.device.type == "cpu":
        return min(8, cores // 4)
    return max(1, min(8, cores - 1))


def make_loader(dataset, sampler: ShardSampler, cfg: TrainConfig, workers: int, rt: Runtime) -> DataLoader:
    pin = cfg.pin_memory.resolve(rt.device.type == "cuda")
    # A last training batch of one image breaks BatchNorm; every rank has the same share, so
    # dropping it keeps the ranks in step.
    drop_last = sampler.shuffle and len(sampler.indices()) % cfg.batch_size == 1 and len(sampler.indices()) > 1
    return DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin,
        persistent_workers=cfg.persistent_workers and workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        drop_last=drop_last,
    )


@dataclass
class Loaders:
    """The job's data: class labels, and one loader per split over this rank's shard."""

    labels: list[str]
    train_sampler: ShardSampler
    train: DataLoader
    valid: DataLoader
    test: DataLoader
    workers: int
    images: dict[str, int] = field(default_factory=dict)  # per split, over all ranks

    @property
    def steps_per_epoch(self) -> int:
        """Training steps in a whole epoch on each rank (the same on all of them)."""
        samples, batch = len(self.train_sampler.indices()), self.train.batch_size or 1
        return samples // batch if self.train.drop_last else -(-samples // batch)


def build(job: Job, cfg: TrainConfig, rt: Runtime, pre: Preprocessing) -> Loaders:
    """Scan the channels, shard each split for this rank and wrap it in a loader."""
    splits = load(job.channels, pre, augment=cfg.augment)
    workers = num_workers(cfg, job, rt)
    if rt.device.type == "cpu" and cfg.num_workers < 0 and workers:
        torch.set_num_threads(max(1, cores_per_process(job, rt) - workers))  # the loader's cores stay free
    train_sampler = ShardSampler(len(splits.train), rt.rank, rt.world_size, cfg.seed, shuffle=True)

    def evaluation(split: ImageFolderSplit) -> DataLoader:
        return make_loader(split, ShardSampler(len(split), rt.rank, rt.world_size, 0, False), cfg, workers, rt)

    return Loaders(
        labels=splits.labels,
        train_sampler=train_sampler,
        train=make_loader(SeededDataset(splits.train, cfg.seed), train_sampler, cfg, workers, rt),
        valid=evaluation(splits.valid),
        test=evaluation(splits.test),
        workers=workers,
        images={"train": len(splits.train), "valid": len(splits.valid), "test": len(splits.test)},
    )
