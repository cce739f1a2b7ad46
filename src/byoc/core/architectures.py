"""The names `--arch` accepts: torchvision's classification models, without importing torch.

The AWS commands check `--arch` against these before a job is billed (byoc.aws.preflight), and the
AWS layer never imports torch. tests/test_architectures.py keeps the list equal to
`torchvision.models.list_models(module=torchvision.models)` of the pinned torchvision (0.29.1).
"""

from __future__ import annotations

import difflib

CLASSIFICATION = (
    "alexnet",
    "convnext_base",
    "convnext_large",
    "convnext_small",
    "convnext_tiny",
    "densenet121",
    "densenet161",
    "densenet169",
    "densenet201",
    "efficientnet_b0",
    "efficientnet_b1",
    "efficientnet_b2",
    "efficientnet_b3",
    "efficientnet_b4",
    "efficientnet_b5",
    "efficientnet_b6",
    "efficientnet_b7",
    "efficientnet_v2_l",
    "efficientnet_v2_m",
    "efficientnet_v2_s",
    "googlenet",
    "inception_v3",
    "maxvit_t",
    "mnasnet0_5",
    "mnasnet0_75",
    "mnasnet1_0",
    "mnasnet1_3",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "mobilenet_v3_small",
    "regnet_x_16gf",
    "regnet_x_1_6gf",
    "regnet_x_32gf",
    "regnet_x_3_2gf",
    "regnet_x_400mf",
    "regnet_x_800mf",
    "regnet_x_8gf",
    "regnet_y_128gf",
    "regnet_y_16gf",
    "regnet_y_1_6gf",
    "regnet_y_32gf",
    "regnet_y_3_2gf",
    "regnet_y_400mf",
    "regnet_y_800mf",
    "regnet_y_8gf",
    "resnet101",
    "resnet152",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnext101_32x8d",
    "resnext101_64x4d",
    "resnext50_32x4d",
    "shufflenet_v2_x0_5",
    "shufflenet_v2_x1_0",
    "shufflenet_v2_x1_5",
    "shufflenet_v2_x2_0",
    "squeezenet1_0",
    "squeezenet1_1",
    "swin_b",
    "swin_s",
    "swin_t",
    "swin_v2_b",
    "swin_v2_s",
    "swin_v2_t",
    "vgg11",
    "vgg11_bn",
    "vgg13",
    "vgg13_bn",
    "vgg16",
    "vgg16_bn",
    "vgg19",
    "vgg19_bn",
    "vit_b_16",
    "vit_b_32",
    "vit_h_14",
    "vit_l_16",
    "vit_l_32",
    "wide_resnet101_2",
    "wide_resnet50_2",
)
# Classification models whose classifier is a convolution, not an nn.Linear: byoc.core.architecture
# replaces the last nn.Linear with a head for the dataset's classes, so it cannot train these.
NO_LINEAR_HEAD = ("squeezenet1_0", "squeezenet1_1")
TRAINABLE = tuple(name for name in CLASSIFICATION if name not in NO_LINEAR_HEAD)


def problem(arch: str) -> str | None:
    """Why `arch` cannot be trained (with the closest names), or None when it can."""
    if arch in TRAINABLE:
        return None
    if arch in NO_LINEAR_HEAD:
        return f"--arch {arch}: its classifier is a convolution, and byoc replaces a linear head; use e.g. resnet50"
    close = difflib.get_close_matches(arch, TRAINABLE, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}?" if close else "e.g. resnet50, efficientnet_b0, convnext_tiny, vit_b_16"
    return f"--arch {arch}: not a torchvision classification model ({hint})"
