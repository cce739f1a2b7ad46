"""Writing files that readers (a resumed job, a server, SageMaker's upload) never see half-written."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write `path` through `write(fh)`: readers see the old file or the whole new one, never a part.
    The temporary file sits beside the target (same file system, so the rename is atomic) and is
    fsynced before the rename, so a crash leaves one or the other."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".tmp-{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """`atomic_write` for a short text."""
    atomic_write(path, lambda fh: fh.write(text.encode()))
