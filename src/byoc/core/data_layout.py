"""The training data's layout, which the training image reads and the local and AWS checks look for
before a job starts (stdlib only: the AWS commands import it without torch)."""

from __future__ import annotations

from pathlib import Path

# split -> the folder names accepted for it inside the `training` channel; the training image also
# tries each Capitalized and UPPER.
SPLIT_DIR_NAMES: dict[str, tuple[str, ...]] = {
    "train": ("train", "training"),
    "valid": ("valid", "validation", "val"),
    "test": ("test", "testing"),
}


def split_folder(root: Path, split: str) -> Path | None:
    """The folder under `root` holding `split` (any accepted name, as written, Capitalized or UPPER)."""
    for name in SPLIT_DIR_NAMES[split]:
        for candidate in (root / name, root / name.capitalize(), root / name.upper()):
            if candidate.is_dir():
                return candidate
    return None


def splits_root(folder: Path) -> Path:
    """`folder`, or the one folder inside it when that is all it holds and `folder` has no train split:
    an archive unpacked as-is puts everything one level down (dogImages/train/...)."""
    subdirs = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return subdirs[0] if split_folder(folder, "train") is None and len(subdirs) == 1 else folder
