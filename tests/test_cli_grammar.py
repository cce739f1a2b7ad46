"""The command line's grammar (byoc.cli, byoc.core.cli_kit): one spelling per meaning with the renamed
options kept as hidden aliases, every default shown in --help, `byoc --version`, the one table style,
and the Lambda function found from any directory."""

from __future__ import annotations

import argparse
import enum
import importlib.metadata
import io
import zipfile

import pytest

import byoc
from byoc.aws import commands, lambda_deploy
from byoc.cli import build_parser, main
from byoc.core import cli_kit, gpu_support

# (command's argv before the option, the option, its hidden alias, a value or None for a flag, dest)
RENAMED = [
    (["predict", "x.jpg"], "--name", "--endpoint", "ep1", "endpoint"),
    (["train-job", "--name", "n", "--data", "s3://b/d"], "--volume-gb", "--volume-size", "80", "volume_gb"),
    (["tune", "--name", "n", "--data", "s3://b/d"], "--volume-gb", "--volume-size", "80", "volume_gb"),
    (["ec2-train", "--name", "n", "--data", "s3://b/d"], "--no-wait", "--no-follow", None, "follow"),
    (["deploy", "--name", "n"], "--serverless-memory", "--memory", "2048", "memory"),
    (["deploy", "--name", "n"], "--async-output", "--output", "s3://b/out", "output"),
    (["deploy", "--name", "n"], "--async-error-output", "--error-output", "s3://b/err", "error_output"),
    (["lambda-deploy", "--name", "n", "--function", "f"], "--function-memory", "--memory", "1024", "memory"),
]


def subparser(*path: str) -> argparse.ArgumentParser:
    parser = build_parser()
    for name in path:
        parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
    return parser


def every_parser(parser=None, path=()):
    parser = parser or build_parser()
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from every_parser(child, (*path, name))


@pytest.mark.parametrize(("argv", "option", "alias", "value", "dest"), RENAMED)
def test_a_renamed_option_is_shown_and_its_old_spelling_still_works_unshown(argv, option, alias, value, dest, capsys):
    command = [a for a in argv if not a.startswith("-")][0]
    text = subparser(command).format_help()
    assert option in text and f"{alias} " not in text.replace(option, "")
    given = [value] if value is not None else []
    new = vars(build_parser().parse_args([*argv, option, *given]))[dest]
    old = vars(build_parser().parse_args([*argv, alias, *given]))[dest]
    assert new == old and new != vars(build_parser().parse_args(argv))[dest]
    assert f"{alias} is deprecated and will be removed: use {option}" in capsys.readouterr().err


def test_predict_needs_the_endpoint_by_either_spelling(capsys):
    assert main(["predict", "x.jpg"]) == 1
    assert capsys.readouterr().err == "error: predict needs --name ENDPOINT (the endpoint's name)\n"


def test_every_default_is_shown_in_help():
    missing = []
    for path, parser in every_parser():
        text = "".join(parser.format_help().split())  # the help wraps at spaces and hyphens
        for action in parser._actions:
            default = action.default
            if action.help == argparse.SUPPRESS or not action.option_strings:
                continue
            if default in (None, [], "", argparse.SUPPRESS) or isinstance(default, bool):
                continue
            shown = default.value if isinstance(default, enum.Enum) else default
            if isinstance(shown, (tuple, list)):
                shown = " ".join(map(str, shown))
            if isinstance(shown, float):
                shown = f"{shown:g}"
            if "".join(str(shown).split()) not in text:
                missing.append(f"byoc {' '.join(path)} {action.option_strings[0]} (default {shown})")
    assert not missing, missing


def test_train_job_defaults_to_a_gpu_the_training_image_runs_on():
    default = subparser("train-job")._option_string_actions["--instance-type"].default
    assert default == commands.DEFAULT_TRAIN_INSTANCE_TYPE
    assert gpu_support.is_gpu(default) and gpu_support.capability_problem(default) is None


def test_version(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    try:
        expected = importlib.metadata.version("byoc")
    except importlib.metadata.PackageNotFoundError:
        expected = byoc.__version__
    assert capsys.readouterr().out == f"byoc {expected}\n"


def test_version_falls_back_to_the_package_when_not_installed(monkeypatch):
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    from byoc import cli

    assert cli.version() == byoc.__version__


def test_lambda_deploy_finds_the_function_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert subparser("lambda-deploy")._option_string_actions["--source"].default is None
    source = lambda_deploy.default_source()
    assert source.is_absolute()
    assert "lambda_function.py" in zipfile.ZipFile(io.BytesIO(lambda_deploy.package(source))).namelist()


def test_one_table_style():
    lines = cli_kit.table(
        ("rank", "label", "probability"), [(1, "zero", "75.0%"), (10, "one", "5.0%")], (True, False, True)
    )
    assert lines == [
        "  rank  label  probability",
        "     1  zero         75.0%",
        "    10  one           5.0%",
    ]
    assert cli_kit.ranks([{"label": "zero", "score": 0.75}]) == lines[:2]
