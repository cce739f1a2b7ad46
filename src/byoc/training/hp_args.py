"""Hyperparameters on a command line: one grammar for the training image (`train --epochs 5`),
`byoc train-job`, `tune`, `ec2-train` and `local train`, generated from TrainConfig so none can drift.

Every TrainConfig field is an option `--NAME VALUE` (kebab-case); a true/false (or auto) one is also
`--NAME` (true) and `--no-NAME` (false); `--hp NAME=VALUE` (repeatable) takes any of them. Values stay
the strings SageMaker sends (`"false"`), checked by TrainConfig's own rules, and a bad one is a
one-line error naming the option it came from. Standard library only (the AWS commands use it).
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
from collections.abc import Sequence
from typing import Any, NoReturn

from byoc.core.errors import ConfigError
from byoc.training.contract import HyperparameterError, Switch, TrainConfig

DEST = "hp_"  # namespace attributes are DEST + field name: no clash with a command's own options
# SageMaker's own hyperparameters (SDK bookkeeping, the tuner's objective) reach the image's command
# line too; TrainConfig ignores them, so the container's parser does.
FOREIGN = ("sagemaker_", "_")

DESCRIPTIONS = {
    "epochs": "passes over the training images",
    "batch_size": "images per step on each process",
    "lr": "learning rate",
    "weight_decay": "decoupled weight decay (adamw) or L2 penalty",
    "optimizer": "the optimizer",
    "arch": "torchvision architecture (`byoc.core.architectures`)",
    "image_size": "side of the square the images are resized and cropped to",
    "pretrained": "start from ImageNet weights",
    "freeze_backbone": "train only the new classifier layer",
    "augment": "random crops and flips of the training images",
    "seed": "random seed",
    "num_workers": "data loader processes (-1: from the cores and the device)",
    "early_stopping_patience": "epochs without a better validation accuracy before stopping (0: off)",
    "amp": "mixed precision (auto: the fastest measured on the job's hardware)",
    "channels_last": "channels-last memory format (auto: on for CUDA)",
    "compile": "torch.compile the model",
    "pin_memory": "pinned host memory for batches (auto: on for CUDA)",
    "persistent_workers": "keep data loader processes between epochs",
    "profile_steps": "steps profiled into TensorBoard (0: off)",
    "checkpoint_dir": "where checkpoints are written and resumed from",
    "checkpoint_every": "epochs between checkpoints",
    "processes_per_host": "training processes per host (0: one per GPU, or 1 on a CPU-only host)",
    "log_every": "steps between loss readings",
    "export_int8": "also export an INT8 model.int8.onnx, calibrated on the validation images",
    "int8_max_drop": "drop the INT8 copy when its top-1 is more than this many points under fp32's",
}


def flag(field_name: str) -> str:
    """The option of a TrainConfig field: `batch_size` -> `--batch-size`."""
    return "--" + field_name.replace("_", "-")


def _switchable(f: dataclasses.Field) -> bool:
    return isinstance(f.default, (bool, Switch))


def _metavar(f: dataclasses.Field) -> str:
    if isinstance(f.default, enum.Enum):
        return "|".join(m.value for m in type(f.default))
    if isinstance(f.default, bool):
        return "true|false"
    return {int: "INT", float: "NUMBER"}.get(type(f.default), "TEXT")


def _default_text(f: dataclasses.Field) -> str:
    value = f.default
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class _Given(argparse.Action):
    """Records (the option as written, its value): the value is checked later, by TrainConfig."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, (f"{option_string} {values}", str(values)))


class _Switch(argparse.Action):
    """`--X` (true) and `--X VALUE`."""

    def __init__(self, option_strings, dest, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs="?", **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        if values is None:
            setattr(namespace, self.dest, (option_string, "true"))
        else:
            setattr(namespace, self.dest, (f"{option_string} {values}", str(values)))


class _Off(argparse.Action):
    """`--no-X`: X false."""

    def __init__(self, option_strings, dest, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, (option_string, "false"))


def add_options(parser: argparse.ArgumentParser) -> None:
    """Every hyperparameter as an option of `parser`, in a group of their own, plus `--hp NAME=VALUE`."""
    group = parser.add_argument_group(
        "hyperparameters",
        "the training image's settings (unset ones take the image's default); a true/false one is also "
        "--NAME (true) and --no-NAME (false)",
    )
    for f in dataclasses.fields(TrainConfig):
        option = flag(f.name)
        text = f"{DESCRIPTIONS.get(f.name, f.name)} (default: {_default_text(f)})"
        if _switchable(f):
            negative = "--no-" + option[2:]
            text = f"{text[:-1]}; {negative}: false)"
            group.add_argument(option, dest=DEST + f.name, action=_Switch, metavar=_metavar(f), help=text)
            group.add_argument(negative, dest=DEST + f.name, action=_Off, help=argparse.SUPPRESS)
        else:
            group.add_argument(option, dest=DEST + f.name, action=_Given, metavar=_metavar(f), help=text)
    group.add_argument(
        "--hp",
        dest=DEST + "pairs",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any hyperparameter by name (repeatable), e.g. --hp epochs=5 --hp pretrained=false",
    )


def collect(args: argparse.Namespace) -> dict[str, str]:
    """The hyperparameters given on the command line, kebab-case names to SageMaker's strings,
    checked by TrainConfig's rules (a bad value: a one-line error naming its option)."""
    given = _pairs(getattr(args, DEST + "pairs", None) or [])
    for f in dataclasses.fields(TrainConfig):
        written = getattr(args, DEST + f.name, None)
        if written is None:
            continue
        name = f.name.replace("_", "-")
        if name in given and given[name][1] != written[1]:
            raise ConfigError(f"{written[0]} and {given[name][0]}: give {name} once")
        given[name] = written
    return check(given)


def _pairs(items: Sequence[str]) -> dict[str, tuple[str, str]]:
    """--hp NAME=VALUE items by kebab-case name; unknown names are refused here."""
    out: dict[str, tuple[str, str]] = {}
    for item in items:
        raw, sep, value = item.partition("=")
        if not sep or not raw:
            raise ConfigError(f"--hp {item!r}: expected NAME=VALUE, e.g. --hp epochs=5")
        name = raw.strip().replace("_", "-")
        if name not in TrainConfig.names():
            valid = ", ".join(TrainConfig.names())
            raise ConfigError(f"--hp {item}: unknown hyperparameter {raw!r}; valid names: {valid}")
        out[name] = (f"--hp {item}", value)
    return out


def check(given: dict[str, tuple[str, str]]) -> dict[str, str]:
    """`given` (name -> (as written, value)) checked as one TrainConfig; true/false values in
    SageMaker's spelling ("true"/"false", whatever the case given), the others as written."""
    values = {name: value for name, (_, value) in given.items()}
    try:
        config = TrainConfig.from_dict(values)
    except HyperparameterError as exc:
        written = given.get(exc.name, (flag(exc.name), ""))[0]
        raise ConfigError(f"{written}: {exc.rule}") from None
    typed = config.to_dict()
    return {name: _canonical(value, typed[name]) for name, value in values.items()}


def _canonical(text: str, typed: Any) -> str:
    if isinstance(typed, bool):
        return "true" if typed else "false"
    if typed in {m.value for m in Switch}:
        return str(typed)
    return text


class _Parser(argparse.ArgumentParser):
    """Errors as ConfigError: the training image turns them into SageMaker's failure reason."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"train: {message}")


def parse_argv(argv: Sequence[str]) -> dict[str, str]:
    """The training image's own command line (`train --epochs 5 --no-pretrained`), as sagemaker-training
    also passes the job's hyperparameters (`--pretrained False`; names as the job spelled them, so
    snake_case too). Returns kebab-case names to strings, checked."""
    parser = _Parser(prog="train", add_help=False, allow_abbrev=False)
    add_options(parser)
    args, rest = parser.parse_known_args(_kebab(argv))
    unknown = _foreign_removed(rest)
    if unknown:
        what = "option" if unknown[0].startswith("-") else "argument"
        raise ConfigError(
            f"train: unknown {what} {unknown[0]!r}: options are hyperparameters "
            f"({', '.join(TrainConfig.names())}) or --hp NAME=VALUE"
        )
    return collect(args)


def _kebab(argv: Sequence[str]) -> list[str]:
    """`--batch_size` as `--batch-size` (SageMaker passes names as they were given)."""
    out = []
    for arg in argv:
        if arg.startswith("--") and not arg.startswith(tuple("--" + p for p in FOREIGN)):
            name, eq, value = arg.partition("=")
            arg = name.replace("_", "-") + eq + value
        out.append(arg)
    return out


def _foreign_removed(rest: list[str]) -> list[str]:
    """The leftover arguments that are not SageMaker's own hyperparameters (each with its value)."""
    unknown, i = [], 0
    while i < len(rest):
        arg = rest[i]
        if arg.startswith(tuple("--" + p for p in FOREIGN)):
            if "=" not in arg and i + 1 < len(rest) and not rest[i + 1].startswith("--"):
                i += 1
        else:
            unknown.append(arg)
        i += 1
    return unknown
