"""examples/sagemaker_sdk_local.py end to end: the SageMaker Python SDK's Estimator, Model and
Transformer drive byoc-train and byoc-serve in the SDK's local mode, with the SDK in its own venv
(scripts/sdk_venv.sh), every request on 127.0.0.1 and every container on the host network."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from byoc.local import containers as dc
from tests import dockerutil as du
from tests.netutil import free_ports

pytestmark = pytest.mark.container

EXAMPLE = du.REPO / "examples" / "sagemaker_sdk_local.py"
# A slice of the demo dataset per class and split keeps the one training epoch short.
PER_CLASS = {"train": 20, "valid": 5, "test": 5}
COMPOSE_DIR_LABEL = "com.docker.compose.project.working_dir"  # docker compose's label on each container


def require_compose() -> None:
    """The SDK's local mode runs its containers with docker compose (plugin or standalone)."""
    plugin = subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    if plugin or shutil.which("docker-compose"):
        return
    message = "no docker compose: install it with apt-get install docker-compose (scripts/install_test_deps.sh)"
    if du.IN_CI:
        pytest.fail(f"CI=true but {message}")
    pytest.skip(message)


@pytest.fixture(scope="module")
def sdk_python() -> str:
    """.venv-sdk's python, the venv made (or found up to date) by scripts/sdk_venv.sh."""
    proc = subprocess.run(
        [str(du.REPO / "scripts" / "sdk_venv.sh")], capture_output=True, text=True, timeout=900, check=False
    )
    assert proc.returncode == 0, f"scripts/sdk_venv.sh failed:\n{proc.stderr[-3000:]}"
    return proc.stdout.strip().splitlines()[-1]


def demo_slice(demo_data: Path, out: Path) -> Path:
    """The first PER_CLASS[split] images of each class of the demo dataset, in the same layout."""
    for split, count in PER_CLASS.items():
        for cls in sorted((demo_data / split).iterdir()):
            (out / split / cls.name).mkdir(parents=True)
            for png in sorted(cls.glob("*.png"))[:count]:
                shutil.copy(png, out / split / cls.name / png.name)
    return out


def one_image_per_class(demo_data: Path, out: Path) -> list[Path]:
    """A folder of PNGs to transform: the first test image of each class, named after its class."""
    out.mkdir()
    for cls in sorted((demo_data / "test").iterdir()):
        shutil.copy(sorted(cls.glob("*.png"))[0], out / f"{cls.name}.png")
    return sorted(out.iterdir())


def offline_env(dead_port: int) -> dict[str, str]:
    """The environment the example runs in: dummy AWS credentials (local mode needs none, and an empty
    chain would ask the instance metadata service), and every HTTP proxy on a closed loopback port,
    so that a request for any address but 127.0.0.1 fails the run instead of leaving the machine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "PYTHONPATH"}
    dead = f"http://127.0.0.1:{dead_port}"
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_EC2_METADATA_DISABLED="true",
        HTTP_PROXY=dead,
        HTTPS_PROXY=dead,
        http_proxy=dead,
        https_proxy=dead,
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    return env


def compose_containers(work: Path) -> list:
    """The containers docker compose ran for the example's jobs (their projects lie under `work`)."""
    client = dc.engine()
    found = client.containers.list(all=True, filters={"label": COMPOSE_DIR_LABEL})
    return [c for c in found if Path(c.labels[COMPOSE_DIR_LABEL]).is_relative_to(work)]


@pytest.fixture(scope="module")
def example_run(sdk_python, demo_data, train_image, serve_gpu_image, tmp_path_factory):
    """The example run once in local mode: {'proc', 'work', 'images', 'classes', 'containers'}."""
    require_compose()
    tmp_path = tmp_path_factory.mktemp("sdk_example")
    data = demo_slice(demo_data, tmp_path / "data")
    images = one_image_per_class(demo_data, tmp_path / "images")
    work = tmp_path / "work"
    port, dead_port = free_ports(2)
    argv = [sdk_python, str(EXAMPLE), "--data", str(data), "--images", str(tmp_path / "images")]
    argv += ["--work", str(work), "--port", str(port), "--train-image", train_image, "--serve-image", serve_gpu_image]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=1200, env=offline_env(dead_port))
    containers = compose_containers(work)
    try:
        yield {
            "proc": proc,
            "work": work,
            "images": images,
            "classes": {cls.name.split(".", 1)[1] for cls in (data / "train").iterdir()},
            "containers": [(c.image.tags, c.attrs["HostConfig"]["NetworkMode"]) for c in containers],
        }
    finally:
        for c in containers:  # the SDK leaves its stopped containers behind
            c.remove(force=True)


def test_the_sdk_trains_deploys_predicts_and_transforms(example_run):
    proc = example_run["proc"]
    assert proc.returncode == 0, f"the example failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    classes = example_run["classes"]

    # Estimator: the training job's artifact, with the model byoc-serve loads.
    with tarfile.open(example_run["work"] / "model.tar.gz") as tar:
        assert {"model.json", "model.ts"} <= set(tar.getnames())

    # Model.deploy + Predictor: top-5 distinct demo classes, best first.
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("prediction: "))
    top = json.loads(line.removeprefix("prediction: "))["predictions"]
    assert len(top) == 5 and len({p["label"] for p in top}) == 5
    assert {p["label"] for p in top} <= classes
    scores = [p["score"] for p in top]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0001

    # Transformer: one <image>.out per input image, each the model's answer for it.
    outputs = sorted((example_run["work"] / "transform").iterdir())
    assert [p.name for p in outputs] == [f"{png.name}.out" for png in example_run["images"]]
    for out in outputs:
        assert json.loads(out.read_text())["predictions"][0]["label"] in classes


def test_every_container_ran_on_the_host_network(example_run):
    # Training, the endpoint and the transform each had a container, none on a Docker network.
    assert example_run["proc"].returncode == 0, example_run["proc"].stderr[-4000:]
    ran = example_run["containers"]
    assert len(ran) == 3, ran
    assert {mode for _, mode in ran} == {"host"}
    names = {n.name for n in dc.engine().networks.list()}
    assert "sagemaker-local" not in names
