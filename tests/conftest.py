"""Shared fixtures. Container tests are marked `container`; under CI=true they must run."""

from __future__ import annotations

import json
import tempfile
import uuid
from pathlib import Path

import pytest

from tests import dockerutil as du

# The moto_server and aws fixtures, for every test module that asks for them by name; every AWS request
# of every test checked as AWS checks it (tests/aws_requests.py); the fixtures of tests/helpers/.
pytest_plugins = [
    "tests.awsutil",
    "tests.aws_requests",
    "tests.helpers.models",
    "tests.helpers.mms",
    "tests.helpers.registry",
    "tests.helpers.serving",
]


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "container" in item.keywords:
            item.add_marker(pytest.mark.timeout(1800))


def pytest_collection_finish(session):
    """Stop before the first test, saying what to free, when the disk cannot hold the container tests."""
    if not any("container" in item.keywords for item in session.items):
        return
    where = Path(session.config.option.basetemp or tempfile.gettempdir())
    if shortage := du.disk_shortage(where, du.DISK_NEEDED):
        pytest.exit(shortage, returncode=1)


def pytest_sessionfinish(session, exitstatus):
    """Under CI=true a skipped test is a failure: the container tests must really run."""
    if not du.IN_CI:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped:
        reporter.write_line(f"CI=true: {len(skipped)} test(s) were skipped; CI requires them to run", red=True)
        session.exitstatus = 1


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    """The embedded demo dataset (real handwritten digits) in the dogImages layout."""
    from byoc.local.demo_data import write_demo_dataset

    root = tmp_path_factory.mktemp("demo") / "dogImages"
    write_demo_dataset(root)
    return root


@pytest.fixture(scope="session")
def train_image() -> str:
    return du.ensure_image(du.TRAIN_IMAGE, "train")


@pytest.fixture(scope="session")
def serve_gpu_image() -> str:
    """byoc-serve:latest: torch, TorchScript, CUDA when there is a GPU."""
    return du.ensure_image(du.SERVE_IMAGE, "serve")


@pytest.fixture(scope="session")
def serve_cpu_image() -> str:
    """byoc-serve:cpu: ONNX Runtime and no torch."""
    return du.ensure_image(du.SERVE_CPU_IMAGE, "cpu")


@pytest.fixture(scope="session", params=["gpu_image", "cpu_image"])
def serve_image(request) -> str:
    """Each serving image in turn: every serving container test holds for both."""
    return request.getfixturevalue(f"serve_{request.param.split('_')[0]}_image")


# Fast settings that still give a real model on the demo data (see `make demo` in docs/guides/local.md).
QUICK_HPS = {
    "arch": "resnet18",
    "image-size": 32,
    "pretrained": "false",
    "epochs": "4",
    "batch-size": "64",
    "lr": "0.003",
    "num-workers": "1",
}


@pytest.fixture(scope="session")
def trained_model(train_image, demo_data, tmp_path_factory) -> dict:
    """A model trained by the training image on the demo data: {'model_dir', 'metrics', 'data'}."""
    root = du.make_opt_ml(tmp_path_factory.mktemp("trained") / "opt_ml", QUICK_HPS, {"training": demo_data})
    proc = du.train_container(root, name=f"byoc-test-train-{uuid.uuid4().hex[:8]}")
    assert proc.returncode == 0, f"training failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    metrics = json.loads((root / "output" / "data" / "metrics.json").read_text())
    return {"model_dir": root / "model", "metrics": metrics, "data": demo_data, "log": proc.stdout + proc.stderr}
