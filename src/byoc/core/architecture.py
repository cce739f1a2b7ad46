"""Model architectures by name: any torchvision classification model with a new head.

Training builds its model here, and serving rebuilds an artifact without a TorchScript copy
from its state dict here: the one place that knows how a name becomes a network.
"""

from __future__ import annotations

from torch import nn
from torchvision import models

from byoc.core.errors import ConfigError


def _last_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = (name, module)
    if last is None:
        raise ConfigError(f"architecture {type(model).__name__} has no linear classifier head to replace")
    return last


def _set_submodule(model: nn.Module, dotted: str, new: nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def head_name(model: nn.Module) -> str:
    """Dotted name of the classifier layer (the last nn.Linear)."""
    return _last_linear(model)[0]


def build(arch: str, num_classes: int) -> nn.Module:
    """The architecture with a `num_classes` head and random weights (used to load an artifact)."""
    if arch not in models.list_models(module=models):
        raise ConfigError(
            f"unknown arch {arch!r}: use a torchvision classification model, e.g. resnet50, "
            f"resnet18, efficientnet_b0, mobilenet_v3_large, convnext_tiny, vit_b_16"
        )
    kwargs = {"aux_logits": False, "init_weights": False} if arch in ("googlenet", "inception_v3") else {}
    model = models.get_model(arch, weights=None, **kwargs)
    name, linear = _last_linear(model)
    _set_submodule(model, name, nn.Linear(linear.in_features, num_classes))
    return model


def pretrained_fit(model: nn.Module, state: object) -> tuple[dict, list[str]]:
    """(the tensors of `state` that `model` takes, the model's tensors it lacks or holds in another shape).

    The classifier head is left out of both: it is replaced for the dataset's classes, so its pretrained
    weights never fit. A checkpoint that wraps its weights in {"state_dict": ...} is unwrapped."""
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        return {}, ["(the file holds no state dict)"]
    head = head_name(model) + "."
    own = model.state_dict()
    usable = {
        k: v
        for k, v in state.items()
        if not k.startswith(head) and k in own and getattr(v, "shape", None) == own[k].shape
    }
    missing = [k for k in own if k not in usable and not k.startswith(head)]
    return usable, missing
