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
