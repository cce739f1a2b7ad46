"""torchvision's pretrained weights files, without importing torch: which file each `--arch` starts
from, and whether a file is the one it claims to be.

A job that cannot reach the internet (network isolation, a private subnet) gets its pretrained weights as
the `weights` channel (`byoc weights upload` puts them under the NAME prefix); the training image then
refuses a file that is another architecture's or whose bytes are not the ones torchvision published.
torchvision names each file ARCH...-HASH.pth where HASH is the start of the file's SHA-256 (the check
torch.hub's `check_hash` makes on a download). tests/test_pretrained.py keeps FILES equal to the weights
enums of the pinned torchvision (0.29.1).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

URL_BASE = "https://download.pytorch.org/models/"
# torch.hub.HASH_REGEX: the hex digits after the first "-" that a "." follows.
HASH_IN_NAME = re.compile(r"-([a-f0-9]*)\.")
SUFFIXES = (".pth", ".pt")

# Each architecture's published files, its DEFAULT weights first (what pretrained=true downloads).
FILES: dict[str, tuple[str, ...]] = {
    "alexnet": ("alexnet-owt-7be5be79.pth",),
    "convnext_base": ("convnext_base-6075fbad.pth",),
    "convnext_large": ("convnext_large-ea097f82.pth",),
    "convnext_small": ("convnext_small-0c510722.pth",),
    "convnext_tiny": ("convnext_tiny-983f1562.pth",),
    "densenet121": ("densenet121-a639ec97.pth",),
    "densenet161": ("densenet161-8d451a50.pth",),
    "densenet169": ("densenet169-b2777c0a.pth",),
    "densenet201": ("densenet201-c1103571.pth",),
    "efficientnet_b0": ("efficientnet_b0_rwightman-7f5810bc.pth",),
    "efficientnet_b1": (
        "efficientnet_b1-c27df63c.pth",
        "efficientnet_b1_rwightman-bac287d4.pth",
    ),
    "efficientnet_b2": ("efficientnet_b2_rwightman-c35c1473.pth",),
    "efficientnet_b3": ("efficientnet_b3_rwightman-b3899882.pth",),
    "efficientnet_b4": ("efficientnet_b4_rwightman-23ab8bcd.pth",),
    "efficientnet_b5": ("efficientnet_b5_lukemelas-1a07897c.pth",),
    "efficientnet_b6": ("efficientnet_b6_lukemelas-24a108a5.pth",),
    "efficientnet_b7": ("efficientnet_b7_lukemelas-c5b4e57e.pth",),
    "efficientnet_v2_l": ("efficientnet_v2_l-59c71312.pth",),
    "efficientnet_v2_m": ("efficientnet_v2_m-dc08266a.pth",),
    "efficientnet_v2_s": ("efficientnet_v2_s-dd5fe13b.pth",),
    "googlenet": ("googlenet-1378be20.pth",),
    "inception_v3": ("inception_v3_google-0cc3c7bd.pth",),
    "maxvit_t": ("maxvit_t-bc5ab103.pth",),
    "mnasnet0_5": ("mnasnet0.5_top1_67.823-3ffadce67e.pth",),
    "mnasnet0_75": ("mnasnet0_75-7090bc5f.pth",),
    "mnasnet1_0": ("mnasnet1.0_top1_73.512-f206786ef8.pth",),
    "mnasnet1_3": ("mnasnet1_3-a4c69d6f.pth",),
    "mobilenet_v2": (
        "mobilenet_v2-7ebf99e0.pth",
        "mobilenet_v2-b0353104.pth",
    ),
    "mobilenet_v3_large": (
        "mobilenet_v3_large-5c1a4163.pth",
        "mobilenet_v3_large-8738ca79.pth",
    ),
    "mobilenet_v3_small": ("mobilenet_v3_small-047dcff4.pth",),
    "regnet_x_16gf": (
        "regnet_x_16gf-ba3796d7.pth",
        "regnet_x_16gf-2007eb11.pth",
    ),
    "regnet_x_1_6gf": (
        "regnet_x_1_6gf-a12f2b72.pth",
        "regnet_x_1_6gf-e3633e7f.pth",
    ),
    "regnet_x_32gf": (
        "regnet_x_32gf-6eb8fdc6.pth",
        "regnet_x_32gf-9d47f8d0.pth",
    ),
    "regnet_x_3_2gf": (
        "regnet_x_3_2gf-7071aa85.pth",
        "regnet_x_3_2gf-f342aeae.pth",
    ),
    "regnet_x_400mf": (
        "regnet_x_400mf-62229a5f.pth",
        "regnet_x_400mf-adf1edd5.pth",
    ),
    "regnet_x_800mf": (
        "regnet_x_800mf-94a99ebd.pth",
        "regnet_x_800mf-ad17e45c.pth",
    ),
    "regnet_x_8gf": (
        "regnet_x_8gf-2b70d774.pth",
        "regnet_x_8gf-03ceed89.pth",
    ),
    "regnet_y_128gf": (
        "regnet_y_128gf_swag-c8ce3e52.pth",
        "regnet_y_128gf_lc_swag-cbe8ce12.pth",
    ),
    "regnet_y_16gf": (
        "regnet_y_16gf-3e4a00f9.pth",
        "regnet_y_16gf-9e6ed7dd.pth",
        "regnet_y_16gf_swag-43afe44d.pth",
        "regnet_y_16gf_lc_swag-f3ec0043.pth",
    ),
    "regnet_y_1_6gf": (
        "regnet_y_1_6gf-0d7bc02a.pth",
        "regnet_y_1_6gf-b11a554e.pth",
    ),
    "regnet_y_32gf": (
        "regnet_y_32gf-8db6d4b5.pth",
        "regnet_y_32gf-4dee3f7a.pth",
        "regnet_y_32gf_swag-04fdfa75.pth",
        "regnet_y_32gf_lc_swag-e1583746.pth",
    ),
    "regnet_y_3_2gf": (
        "regnet_y_3_2gf-9180c971.pth",
        "regnet_y_3_2gf-b5a9779c.pth",
    ),
    "regnet_y_400mf": (
        "regnet_y_400mf-e6988f5f.pth",
        "regnet_y_400mf-c65dace8.pth",
    ),
    "regnet_y_800mf": (
        "regnet_y_800mf-58fc7688.pth",
        "regnet_y_800mf-1b27b58c.pth",
    ),
    "regnet_y_8gf": (
        "regnet_y_8gf-dc2b1b54.pth",
        "regnet_y_8gf-d0d0e4a8.pth",
    ),
    "resnet101": (
        "resnet101-cd907fc2.pth",
        "resnet101-63fe2227.pth",
    ),
    "resnet152": (
        "resnet152-f82ba261.pth",
        "resnet152-394f9c45.pth",
    ),
    "resnet18": ("resnet18-f37072fd.pth",),
    "resnet34": ("resnet34-b627a593.pth",),
    "resnet50": (
        "resnet50-11ad3fa6.pth",
        "resnet50-0676ba61.pth",
    ),
    "resnext101_32x8d": (
        "resnext101_32x8d-110c445d.pth",
        "resnext101_32x8d-8ba56ff5.pth",
    ),
    "resnext101_64x4d": ("resnext101_64x4d-173b62eb.pth",),
    "resnext50_32x4d": (
        "resnext50_32x4d-1a0047aa.pth",
        "resnext50_32x4d-7cdf4587.pth",
    ),
    "shufflenet_v2_x0_5": ("shufflenetv2_x0.5-f707e7126e.pth",),
    "shufflenet_v2_x1_0": ("shufflenetv2_x1-5666bf0f80.pth",),
    "shufflenet_v2_x1_5": ("shufflenetv2_x1_5-3c479a10.pth",),
    "shufflenet_v2_x2_0": ("shufflenetv2_x2_0-8be3c8ee.pth",),
    "squeezenet1_0": ("squeezenet1_0-b66bff10.pth",),
    "squeezenet1_1": ("squeezenet1_1-b8a52dc0.pth",),
    "swin_b": ("swin_b-68c6b09e.pth",),
    "swin_s": ("swin_s-5e29d889.pth",),
    "swin_t": ("swin_t-704ceda3.pth",),
    "swin_v2_b": ("swin_v2_b-781e5279.pth",),
    "swin_v2_s": ("swin_v2_s-637d8ceb.pth",),
    "swin_v2_t": ("swin_v2_t-b137f0e2.pth",),
    "vgg11": ("vgg11-8a719046.pth",),
    "vgg11_bn": ("vgg11_bn-6002323d.pth",),
    "vgg13": ("vgg13-19584684.pth",),
    "vgg13_bn": ("vgg13_bn-abd245e5.pth",),
    "vgg16": (
        "vgg16-397923af.pth",
        "vgg16_features-amdegroot-88682ab5.pth",
    ),
    "vgg16_bn": ("vgg16_bn-6c64b313.pth",),
    "vgg19": ("vgg19-dcbb9e9d.pth",),
    "vgg19_bn": ("vgg19_bn-c79401a0.pth",),
    "vit_b_16": (
        "vit_b_16-c867db91.pth",
        "vit_b_16_swag-9ac1b537.pth",
        "vit_b_16_lc_swag-4e70ced5.pth",
    ),
    "vit_b_32": ("vit_b_32-d86f8d99.pth",),
    "vit_h_14": (
        "vit_h_14_swag-80465313.pth",
        "vit_h_14_lc_swag-c1eb923e.pth",
    ),
    "vit_l_16": (
        "vit_l_16-852ce7e3.pth",
        "vit_l_16_swag-4f3808c9.pth",
        "vit_l_16_lc_swag-4d563306.pth",
    ),
    "vit_l_32": ("vit_l_32-c7638314.pth",),
    "wide_resnet101_2": (
        "wide_resnet101_2-d733dc28.pth",
        "wide_resnet101_2-32ee1156.pth",
    ),
    "wide_resnet50_2": (
        "wide_resnet50_2-9ba9bcbe.pth",
        "wide_resnet50_2-95faca4d.pth",
    ),
}
_ARCH_OF = {file: arch for arch, files in FILES.items() for file in files}


def default_url(arch: str) -> str:
    """The URL of the weights pretrained=true starts `arch` from (torchvision's DEFAULT)."""
    return URL_BASE + FILES[arch][0]


def arch_of(filename: str) -> str | None:
    """The architecture torchvision published the file `filename` for, or None for a name of its own."""
    return _ARCH_OF.get(filename)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def problem(path: Path, arch: str) -> str | None:
    """Why the weights file `path` cannot start `arch` by its name and bytes alone, or None.

    A file of torchvision's must be one published for `arch`, with the SHA-256 its name begins; a file
    of another name (weights of your own) passes here and is checked by its tensors when it is loaded."""
    path = Path(path)
    if path.suffix not in SUFFIXES:
        return f"{path.name}: not a .pth or .pt file"
    published = arch_of(path.name)
    if published is None:
        return None
    if published != arch:
        return f"{path.name} is torchvision's {published} weights, not {arch}'s (expected {FILES[arch][0]})"
    match = HASH_IN_NAME.search(path.name)
    if match and not sha256(path).startswith(match[1]):
        return (
            f"{path.name}: its SHA-256 does not start with {match[1]} as torchvision published it "
            "(a damaged or other file)"
        )
    return None


def tensors_problem(path: Path, arch: str) -> str | None:
    """Why `path` does not load as `arch`'s weights, or None: torch.load with weights_only (no pickled code
    runs), then every tensor the architecture has outside its classifier head, in its shape. Needs torch
    and torchvision (imported here: the AWS layer calls this only where they are installed)."""
    import torch

    from byoc.core import architecture

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for code in the pickle, RuntimeError for a damaged zip, ...
        return f"{Path(path).name}: torch cannot load it as weights ({type(exc).__name__}: {exc})"
    _, missing = architecture.pretrained_fit(architecture.build(arch, 2), state)
    if missing:
        return (
            f"{Path(path).name} does not fit {arch}: {len(missing)} tensors missing or of another shape "
            f"(first: {missing[0]})"
        )
    return None
