"""Hyperparameters on the command line (byoc.training.hp_args): one grammar in the training image and in
train-job, tune, ec2-train and local train, values checked the same way, and what train-job sends
to SageMaker read back by the image as sagemaker-training hands it over."""

from __future__ import annotations

import dataclasses
import json

import pytest

from byoc.cli import build_parser, main
from byoc.core.errors import ConfigError
from byoc.training import hp_args
from byoc.training.contract import TrainConfig

# Each command with the arguments it requires besides hyperparameters.
COMMANDS = {
    "train-job": ["train-job", "--name", "hp1", "--data", "s3://b/d"],
    "tune": ["tune", "--name", "hp1", "--data", "s3://b/d"],
    "ec2-train": ["ec2-train", "--name", "hp1", "--data", "s3://b/d"],
    "local train": ["local", "train", "--data", "data"],
}
# Every form of the grammar, and what it means as SageMaker's strings.
FORMS = [
    "--epochs",
    "5",
    "--lr=0.01",
    "--no-pretrained",
    "--freeze-backbone",
    "--augment",
    "false",
    "--channels-last",
    "auto",
    "--amp",
    "bf16",
    "--hp",
    "batch_size=64",
    "--hp",
    "export-int8=FALSE",
]
MEANING = {
    "epochs": "5",
    "lr": "0.01",
    "pretrained": "false",
    "freeze-backbone": "true",
    "augment": "false",
    "channels-last": "auto",
    "amp": "bf16",
    "batch-size": "64",
    "export-int8": "false",
}


def parsed(command: str, *argv: str):
    return build_parser().parse_args([*COMMANDS[command], *argv])


@pytest.mark.parametrize("command", COMMANDS)
def test_every_hyperparameter_is_an_option_of_every_training_command(command):
    args = parsed(command)
    for f in dataclasses.fields(TrainConfig):
        assert hasattr(args, hp_args.DEST + f.name), f"{command} has no {hp_args.flag(f.name)}"
    switches = [f.name for f in dataclasses.fields(TrainConfig) if isinstance(f.default, bool)]
    for name in switches:
        negative = "--no-" + name.replace("_", "-")
        assert hp_args.collect(parsed(command, negative))[name.replace("_", "-")] == "false", negative


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_and_the_image_read_the_same_forms_alike(command):
    assert hp_args.collect(parsed(command, *FORMS)) == MEANING
    assert hp_args.parse_argv(FORMS) == MEANING


def test_what_a_job_sends_the_image_reads_back_as_sagemaker_training_passes_it():
    """train-job's strings go into hyperparameters.json; sagemaker-training json-decodes each and passes
    them to the entry point as `--name value` (booleans as Python's `False`), with its own bookkeeping."""
    mapping = pytest.importorskip("sagemaker_training.mapping")
    sent = hp_args.collect(parsed("train-job", *FORMS))

    def decoded(text: str):
        try:
            return json.loads(text)
        except ValueError:
            return text

    given = {name: decoded(value) for name, value in sent.items()}
    given.update(_tuning_objective_metric="val_accuracy", sagemaker_program="train")
    argv = mapping.to_cmd_args(given)
    assert "False" in argv  # the spelling the image must take
    assert hp_args.parse_argv(argv) == sent
    assert TrainConfig.from_dict(sent).pretrained is False


def test_the_image_takes_snake_case_names_as_a_job_may_spell_them():
    assert hp_args.parse_argv(["--batch_size", "16", "--no-freeze_backbone"]) == {
        "batch-size": "16",
        "freeze-backbone": "false",
    }


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--epochs", "x"], "--epochs x: must be an integer"),
        (["--epochs", "0"], "--epochs 0: must be >= 1"),
        (["--pretrained", "maybe"], "--pretrained maybe: must be true or false"),
        (["--hp", "amp=fp8"], "--hp amp=fp8: is not one of auto, bf16, fp16, off"),
        (["--hp", "epochs"], "--hp 'epochs': expected NAME=VALUE"),
        (["--hp", "bogus=1"], "--hp bogus=1: unknown hyperparameter 'bogus'"),
        (["--epochs", "3", "--hp", "epochs=4"], "--epochs 3 and --hp epochs=4: give epochs once"),
    ],
)
def test_a_bad_value_is_one_line_naming_its_option(argv, message):
    with pytest.raises(ConfigError) as caught:
        hp_args.collect(parsed("train-job", *argv))
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        hp_args.parse_argv(argv)
    assert str(caught.value).startswith(message)


def test_the_image_refuses_an_unknown_option_but_not_sagemakers_own():
    with pytest.raises(ConfigError, match="train: unknown option '--epoch'"):
        hp_args.parse_argv(["--epoch", "5"])  # no abbreviations: a typo is not another option
    assert hp_args.parse_argv(["--sagemaker_region", "us-east-1", "--_tuning_objective_metric=x"]) == {}


def test_local_train_refuses_a_bad_value_in_one_line_before_any_container(tmp_path, capsys):
    assert main(["local", "train", "--data", str(tmp_path), "--epochs", "zero"]) == 1
    assert capsys.readouterr().err == "error: --epochs zero: must be an integer\n"


def test_help_lists_each_hyperparameter_with_the_images_default():
    text = build_parser()._subparsers._group_actions[0].choices["train-job"].format_help()
    for f in dataclasses.fields(TrainConfig):
        assert hp_args.flag(f.name) in text
    assert "(default: 10)" in text.replace("\n", " ").replace("  ", " ")


def test_every_hyperparameter_is_described():
    assert sorted(hp_args.DESCRIPTIONS) == sorted(f.name for f in dataclasses.fields(TrainConfig))
