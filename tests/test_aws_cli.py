"""The AWS commands' command line: no torch, clear errors without credentials, region or a valid name."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.awsutil import aws_env

AWS_COMMANDS = (
    "data",
    "train-job",
    "tune",
    "batch-transform",
    "deploy",
    "rollback",
    "predict",
    "autoscale",
    "lambda-deploy",
    "status",
    "stop",
    "teardown",
)


def test_aws_commands_never_import_torch_or_numpy():
    code = (
        "import sys, byoc.cli, byoc.aws.commands, byoc.aws.status, byoc.aws.teardown, byoc.aws.s3data\n"
        "import byoc.aws.transform_job, byoc.aws.predict, byoc.local.batch_transform, byoc.local.runtime\n"
        "byoc.cli.build_parser()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'numpy', 'PIL')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_command_line_loads_where_only_the_images_packages_are(tmp_path):
    """The images install byoc without its command line's own dependencies (pip --no-deps), and their
    `byoc` (e.g. `byoc local smoke` inside a container) still builds its parser: `regex`, which only the
    request validator uses, must not be needed to load the AWS commands."""
    shadow = tmp_path / "regex"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise ImportError('regex is not installed in the images')\n")
    code = "import byoc.cli; byoc.cli.build_parser(); print('ok')"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert proc.stdout.strip() == "ok", proc.stderr


def test_every_aws_command_is_registered():
    from byoc.cli import build_parser

    choices = build_parser()._subparsers._group_actions[0].choices
    assert set(AWS_COMMANDS) <= set(choices)


def _byoc(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return subprocess.run(
        [sys.executable, "-m", "byoc.cli", *argv], capture_output=True, text=True, env={**clean, **env}, timeout=60
    )


def test_missing_credentials_is_a_one_line_error():
    env = aws_env(None)
    del env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
    proc = _byoc("status", "--name", "dogs", env=env)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: no AWS credentials found") and "Traceback" not in proc.stderr


def test_missing_region_is_a_one_line_error():
    env = aws_env(None)
    del env["AWS_DEFAULT_REGION"]
    proc = _byoc("teardown", "--name", "dogs", env=env)
    assert proc.returncode == 1 and proc.stderr.startswith("error: no AWS region: pass --region")


@pytest.mark.parametrize("name", ["-dogs", "dogs_prod", "x" * 41, ""])
def test_bad_names_are_refused_before_any_call(name):
    proc = _byoc("status", "--name", name, env=aws_env("http://127.0.0.1:9"))
    assert proc.returncode == 2 and "--name" in proc.stderr and "Traceback" not in proc.stderr
