"""Spot-safe checkpoints: atomic writes, resume from the newest valid one."""

from __future__ import annotations

import logging
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from byoc.core.files import atomic_write

log = logging.getLogger(__name__)

PATTERN = re.compile(r"^checkpoint-(\d+)-(\d+)\.pt$")
KEEP = 2  # the newest may be the one a SIGKILL cut short


def name_for(epoch: int, step: int) -> str:
    """Sortable name: epoch and the number of steps done in it (0 = epoch finished)."""
    return f"checkpoint-{epoch:05d}-{step:07d}.pt"


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        set_cuda_rng_states(state["cuda"])


def set_cuda_rng_states(states: list[torch.Tensor]) -> None:
    """Each GPU's generator from the saved one of the same index, for the GPUs both hosts have: a
    checkpoint from a host with more GPUs resumes on one with fewer (set_rng_state_all would ask
    for a device this host lacks), and GPUs beyond the saved ones keep their seeded state."""
    present = torch.cuda.device_count()
    if len(states) != present:
        log.warning("checkpoint has the CUDA RNG state of %d GPU(s), this host has %d", len(states), present)
    for index, state in enumerate(states[:present]):
        torch.cuda.set_rng_state(state, index)


def save(directory: Path, state: dict[str, Any], epoch: int, step: int) -> Path:
    """Write `state` atomically (temporary file, fsync, rename) and prune old checkpoints."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / name_for(epoch, step)
    atomic_write(final, lambda fh: torch.save(state, fh))
    for old in candidates(directory)[KEEP:]:
        old.unlink(missing_ok=True)
    return final


def candidates(directory: Path) -> list[Path]:
    """Checkpoint files, newest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(tuple(map(int, m.groups())), p) for p in directory.iterdir() if (m := PATTERN.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def load_newest(directory: Path) -> tuple[dict[str, Any], Path] | None:
    """The newest checkpoint that loads; corrupt or partial ones are skipped with a warning."""
    for path in candidates(directory):
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
            if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
                raise ValueError("not a byoc checkpoint")
            return state, path
        except Exception as exc:  # truncated zip, foreign pickle, ...
            log.warning(
                "skipping unreadable checkpoint %s: %s",
                path.name,
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
            )
    return None
