"""The package as users install it: `python -m build` makes an sdist and, from that sdist, a wheel; the
wheel in a fresh virtual environment gives a working `byoc` for the AWS commands without torch, and a
command that needs an extra says which one to install."""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

import byoc
from byoc.core.errors import EXTRA_OF_MODULE, missing_extra

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "byoc"
LAMBDA = REPO / "lambda" / "lambda_function.py"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
# What only the extras bring: none of it may come with the core install.
EXTRAS_ONLY = ("torch", "torchvision", "numpy", "PIL", "docker", "sklearn", "onnxruntime", "sagemaker_inference")
# The names of `byoc`'s top-level commands, printed by the Python that runs this.
PRINT_COMMANDS = (
    "import json, byoc.cli as c\n"
    "(sub,) = [a for a in c.build_parser()._actions if a.dest == 'command']\n"
    "print(json.dumps(sorted(sub.choices)))\n"
)
# `byoc NAME --help` for each NAME read from stdin; prints the names whose help came out.
HELP_EACH = (
    "import contextlib, io, json, byoc.cli as c\n"
    "helped = []\n"
    "for name in json.loads(input()):\n"
    "    out = io.StringIO()\n"
    "    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):\n"
    "        c.main([name, '--help'])\n"
    "    helped += [name] if out.getvalue().startswith(f'usage: byoc {name}') else []\n"
    "print(json.dumps(helped))\n"
)


def _run(*argv: str | Path, stdin: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """argv; with cwd, as a user's shell runs it there: without a PYTHONPATH onto this checkout, and away
    from the repository root, whose docker/ folder Python would import as a namespace package `docker`."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")} if cwd else None
    args = [str(a) for a in argv]
    return subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=300, cwd=cwd, env=env)


def _checked(*argv: str | Path, stdin: str | None = None, cwd: Path | None = None) -> str:
    done = _run(*argv, stdin=stdin, cwd=cwd)
    assert done.returncode == 0, f"{' '.join(map(str, argv))} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """The sdist and the wheel, built as a release is (the wheel from the sdist), with this environment's
    setuptools (the version build-system pins) rather than a download."""
    out = tmp_path_factory.mktemp("dist")
    _checked(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, REPO)
    return out


@pytest.fixture(scope="module")
def wheel(dist) -> zipfile.ZipFile:
    (path,) = dist.glob("byoc-*-py3-none-any.whl")
    return zipfile.ZipFile(path)


@pytest.fixture(scope="module")
def venv(tmp_path_factory, dist) -> Path:
    """A fresh virtual environment with the wheel and its core dependencies, which pip fetches as for a
    user's `pip install byoc-X.whl`."""
    env = tmp_path_factory.mktemp("venv")
    _checked(sys.executable, "-m", "venv", "--without-pip", env)
    (path,) = dist.glob("byoc-*.whl")
    python = env / "bin" / "python"
    _checked(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-compile", path, cwd=env)
    return env


def _in_venv(venv: Path, code: str, stdin: str | None = None) -> str:
    return _checked(venv / "bin" / "python", "-c", code, stdin=stdin, cwd=venv)


def _byoc(venv: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return _run(venv / "bin" / "byoc", *argv, cwd=venv)


def test_wheel_carries_every_file_of_the_package_and_the_lambda_function(wheel):
    names = set(wheel.namelist())
    files = [p for p in PACKAGE.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    expected = {f"byoc/{p.relative_to(PACKAGE).as_posix()}" for p in files}
    assert {"byoc/serve/log4j2.xml", "byoc/aws/ec2_user_data.sh", "byoc/py.typed"} <= expected  # data, not only .py
    assert sorted(expected - names) == [], "missing from the wheel: list the package in pyproject.toml"
    assert wheel.read("byoc/_lambda/lambda_function.py") == LAMBDA.read_bytes()


def test_wheel_carries_the_license(wheel):
    (license_file,) = [n for n in wheel.namelist() if n.endswith(".dist-info/licenses/LICENSE")]
    assert wheel.read(license_file) == (REPO / "LICENSE").read_bytes()
    metadata = wheel.read(license_file.replace("licenses/LICENSE", "METADATA")).decode()
    assert "License-Expression: Apache-2.0" in metadata.splitlines()


def test_core_install_has_no_extra(venv):
    found = _in_venv(venv, f"import importlib.util as u; print([m for m in {EXTRAS_ONLY!r} if u.find_spec(m)])")
    assert found.strip() == "[]"
    version = _in_venv(venv, "import byoc.aws.commands, importlib.metadata as m; print(m.version('byoc'))")
    assert version.strip() == byoc.__version__


def test_installed_package_has_the_lambda_function_in_byoc_lambda(venv):
    """Where `byoc lambda-deploy` and `byoc lambda-local` find the function in an install (in a checkout:
    lambda/ beside src/)."""
    code = (
        "import byoc, hashlib, pathlib\n"
        "path = pathlib.Path(byoc.__file__).parent / '_lambda' / 'lambda_function.py'\n"
        "print(hashlib.sha256(path.read_bytes()).hexdigest())\n"
    )
    assert _in_venv(venv, code).strip() == hashlib.sha256(LAMBDA.read_bytes()).hexdigest()


def test_core_install_has_every_command(venv):
    listed = json.loads(_in_venv(venv, PRINT_COMMANDS))
    assert listed == json.loads(_checked(sys.executable, "-c", PRINT_COMMANDS))  # those of this full install
    shown = _byoc(venv, "--help")
    assert shown.returncode == 0, shown.stderr
    assert [name for name in listed if not re.search(rf"^\s+{name}\b", shown.stdout, re.MULTILINE)] == []
    version = _byoc(venv, "--version")
    assert version.stdout == f"byoc {byoc.__version__}\n", version.stderr


def test_every_command_help_runs_in_the_core_install(venv):
    deploy = _byoc(venv, "deploy", "--help")
    assert deploy.returncode == 0 and "--instance-type" in deploy.stdout, deploy.stderr
    commands = _in_venv(venv, PRINT_COMMANDS)
    assert json.loads(_in_venv(venv, HELP_EACH, stdin=commands)) == json.loads(commands)


@pytest.mark.parametrize(
    ("argv", "module", "extra"),
    [(["local", "smoke"], "docker", "local"), (["demo-data", "{tmp}/demo"], "numpy", "torch")],
)
def test_a_command_that_needs_an_extra_says_which(venv, tmp_path, argv, module, extra):
    done = _byoc(venv, *(a.format(tmp=tmp_path) for a in argv))
    assert (done.returncode, done.stdout) == (1, "")
    needs = f"needs {module}, from the [{extra}] extra: pip install 'byoc[{extra}]'"
    assert done.stderr == f"error: this command {needs}\n"


@functools.cache
def _distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()  # a second or so: every installed distribution's files


def test_only_an_extra_s_missing_module_gets_the_message():
    """A module of no extra missing (byoc's own, say) is a broken install: the traceback stays."""
    assert missing_extra(ModuleNotFoundError("no PIL.Image", name="PIL.Image")) == (
        "needs PIL, from the [torch] extra: pip install 'byoc[torch]'"
    )
    assert missing_extra(ModuleNotFoundError("no byoc.aws.gone", name="byoc.aws.gone")) is None
    assert missing_extra(ModuleNotFoundError("no name")) is None


def _canonical(requirement: str) -> str:
    return re.split(r"[\[=<>;~! ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


@pytest.mark.parametrize(("module", "extra"), sorted(EXTRA_OF_MODULE.items()))
def test_each_module_an_extra_provides_is_in_that_extra(module, extra):
    """EXTRA_OF_MODULE against pyproject.toml, through the distribution that installs the module here."""
    distributions = _distributions().get(module)
    assert distributions, f"{module} is not installed in this environment (make venv installs every extra)"
    in_extra = {_canonical(r) for r in PYPROJECT["project"]["optional-dependencies"][extra]}
    assert {_canonical(d) for d in distributions} & in_extra, f"{module} comes from {distributions}, not [{extra}]"
