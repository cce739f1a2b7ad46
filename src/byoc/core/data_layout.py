"""The training data's layout, which the training image reads and the local and AWS checks look for
before a job starts (stdlib only: the AWS commands import it without torch)."""

from __future__ import annotations

# split -> the folder names accepted for it inside the `training` channel; the training image also
# tries each Capitalized and UPPER.
SPLIT_DIR_NAMES: dict[str, tuple[str, ...]] = {
    "train": ("train", "training"),
    "valid": ("valid", "validation", "val"),
    "test": ("test", "testing"),
}
