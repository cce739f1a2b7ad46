"""A model for training: a torchvision architecture (byoc.core.architecture) with optional
pretrained weights and a frozen backbone."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn
from torchvision import models

from byoc.core import pretrained
from byoc.core.architecture import build, head_name, pretrained_fit
from byoc.core.errors import ConfigError

log = logging.getLogger(__name__)


def _load_pretrained(model: nn.Module, arch: str, weights_file: Path | None) -> None:
    if weights_file is not None:
        state, source = _channel_state(weights_file, arch), str(weights_file)
    else:
        weights = models.get_model_weights(arch).DEFAULT
        try:
            state = weights.get_state_dict(progress=False, check_hash=True)
        except Exception as exc:  # network errors come in many types (URLError, OSError, ...)
            raise ConfigError(
                f"could not download the pretrained {arch} weights ({type(exc).__name__}: {exc}). "
                "Without network access set the hyperparameter pretrained=false, or add a channel "
                "named 'weights' holding a .pth state dict for this architecture "
                f"(`byoc weights upload --arch {arch}` puts torchvision's there)."
            ) from exc
        source = weights.url
    usable, missing = pretrained_fit(model, state)
    if missing:
        raise ConfigError(
            f"the pretrained weights from {source} do not fit {arch}: {len(missing)} tensors missing "
            f"or of another shape (first: {missing[0]}). Check that the file is a {arch} state dict."
        )
    model.load_state_dict(usable, strict=False)
    log.info("loaded pretrained %s weights from %s", arch, source)


def _channel_state(weights_file: Path, arch: str) -> object:
    """The 'weights' channel's file, loaded without running pickled code, once its name and bytes are
    those torchvision published for `arch` (byoc.core.pretrained); a file of another name is judged by
    its tensors alone."""
    found = pretrained.problem(weights_file, arch)
    if found:
        raise ConfigError(f"the 'weights' channel: {found}")
    try:
        return torch.load(weights_file, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for pickled code, RuntimeError for a damaged archive, ...
        raise ConfigError(
            f"the 'weights' channel: {weights_file.name} does not load as a state dict ({type(exc).__name__}: {exc})"
        ) from exc


def create(
    arch: str,
    num_classes: int,
    pretrained: bool = False,
    freeze_backbone: bool = False,
    weights_file: Path | None = None,
) -> nn.Module:
    """A model for training: optionally pretrained, optionally with a frozen backbone."""
    model = build(arch, num_classes)
    if pretrained or weights_file is not None:
        _load_pretrained(model, arch, weights_file)
    if freeze_backbone:
        head = head_name(model)
        for name, param in model.named_parameters():
            param.requires_grad = name.startswith(head + ".")
    return model
