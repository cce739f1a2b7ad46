"""The serving image as a multi-model endpoint's container (SAGEMAKER_MULTI_MODEL=true): SageMaker's
model API on the public port, two models of different classes each answering with its own, a broken
third refused with its reason while the two keep serving, 409 / 404 / 507, DELETE freeing memory
(measured in the container's cgroup), and nothing reaching the model server's own API."""

from __future__ import annotations

import io
import json
import re
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
from PIL import Image

from byoc.core import architecture, artifact, onnx_export
from byoc.core.artifact import ModelMeta
from byoc.core.preprocessing import Preprocessing
from byoc.serve.config import ServeConfig
from byoc.serve.handler import ImageClassifierHandler
from tests import dockerutil as du

pytestmark = pytest.mark.container

OTHER_LABELS = ["alpha", "beta", "gamma"]
SCORE_TOLERANCE = 1e-3  # the image's torch against this venv's, as in test_serve_cpu_container


def call(url: str, method: str = "GET", body: bytes | None = None, headers: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=300) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        assert exc.headers.get("Content-Type", "").startswith("application/json"), raw[:200]
        return exc.code, json.loads(raw)


def load(base: str, name: str, url: str) -> tuple[int, dict]:
    body = json.dumps({"model_name": name, "url": url}).encode()
    return call(f"{base}/models", "POST", body, {"Content-Type": "application/json"})


def invoke(base: str, name: str, image: bytes) -> tuple[int, dict]:
    headers = {"Content-Type": "image/png", "X-Amzn-SageMaker-Target-Model": f"{name}.tar.gz"}
    return call(f"{base}/models/{name}/invoke", "POST", image, headers)


def png(seed: int) -> bytes:
    gen = torch.Generator().manual_seed(seed)
    pixels = (torch.rand(32, 32, 3, generator=gen) * 255).to(torch.uint8).numpy()
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def expected(model_dir: Path, image: bytes, serve_image: str) -> dict:
    """The answer the handler gives in this process for the artifact, with the runtime the image
    has: TorchScript, or (byoc-serve:cpu, no torch) ONNX Runtime on the same copy."""
    handler = ImageClassifierHandler(ServeConfig(model_dir=model_dir))
    handler.load(model_dir, "cpu", has_torch=serve_image != du.SERVE_CPU_IMAGE)
    return json.loads(handler.predict(image, {"Content-Type": "image/png"}))


def close(got: dict, want: dict) -> bool:
    pairs = zip(got["predictions"], want["predictions"], strict=True)
    return all(g["label"] == w["label"] and abs(g["score"] - w["score"]) < SCORE_TOLERANCE for g, w in pairs)


@pytest.fixture(scope="module")
def models_root(trained_model, tmp_path_factory) -> Path:
    """/opt/ml/models as SageMaker lays it out: <name>/model per model. `digits`: the training
    image's model (10 classes); `letters`: another artifact with 3 classes; `broken`: weights cut short."""
    root = tmp_path_factory.mktemp("models")
    shutil.copytree(trained_model["model_dir"], root / "digits" / "model")
    torch.manual_seed(1)
    artifact.save(
        root / "letters" / "model",
        architecture.build("resnet18", len(OTHER_LABELS)),
        ModelMeta(arch="resnet18", labels=OTHER_LABELS, preprocessing=Preprocessing.for_size(32)),
    )
    onnx_export.export(root / "letters" / "model")  # what byoc-serve:cpu serves of it
    shutil.copytree(root / "letters" / "model", root / "broken" / "model")
    for name in ("model.pt", "model.ts", "model.onnx"):
        weights = root / "broken" / "model" / name
        if weights.exists():
            weights.write_bytes(weights.read_bytes()[:1000])
    (root / "outside").symlink_to("/etc")
    return root


def start(image: str, root: Path, tmp_path_factory, *env: str, docker: tuple[str, ...] = ()) -> dict:
    empty = tmp_path_factory.mktemp("no-single-model")
    return du.start_serving(
        image,
        empty,
        "byoc-test-mme",
        "SAGEMAKER_MULTI_MODEL=True",  # SageMaker's own containers are tested with both spellings
        *env,
        docker=("-v", f"{root}:/opt/ml/models:ro", *docker),
    )


@pytest.fixture(scope="module")
def endpoint(serve_image, models_root, tmp_path_factory):
    container = start(serve_image, models_root, tmp_path_factory)
    yield container
    du.run(["rm", "-f", container["name"]])


def test_image_is_labelled_and_pings_with_no_model(serve_image, endpoint):
    label = du.run(["image", "inspect", "-f", "{{json .Config.Labels}}", serve_image], check=True).stdout
    assert json.loads(label)["com.amazonaws.sagemaker.capabilities.multi-models"] == "true"
    base = endpoint["url"]
    assert call(f"{base}/ping") == (200, {"status": "healthy"})
    status, doc = call(f"{base}/models")
    assert status == 200 and doc["models"] == [] and "nextPageToken" not in doc


def test_two_models_answer_with_their_own_classes_and_a_broken_one_is_refused(endpoint, models_root, serve_image):
    base = endpoint["url"]
    for name in ("digits", "letters"):
        status, doc = load(base, name, f"/opt/ml/models/{name}/model")
        assert status == 200, doc
        assert doc["modelName"] == name and doc["memoryBytes"] > 0
    image = png(7)
    for name in ("digits", "letters"):
        status, doc = invoke(base, name, image)
        assert status == 200, doc
        assert close(doc, expected(models_root / name / "model", image, serve_image)), (name, doc)
    letters = {p["label"] for p in invoke(base, "letters", image)[1]["predictions"]}
    assert letters == set(OTHER_LABELS)

    status, doc = load(base, "broken", "/opt/ml/models/broken/model")
    assert status == 400 and "broken" in doc["error"] and "cannot be served" in doc["error"], doc
    assert call(f"{base}/models/broken")[0] == 404
    for name in ("digits", "letters"):  # the two keep serving
        assert invoke(base, name, image)[0] == 200
    assert call(f"{base}/ping")[0] == 200


def test_list_pages_describe_conflict_and_not_found(endpoint):
    base = endpoint["url"]
    for name in ("digits", "letters"):
        if call(f"{base}/models/{name}")[0] == 404:
            assert load(base, name, f"/opt/ml/models/{name}/model")[0] == 200
    status, first = call(f"{base}/models?limit=1")
    assert status == 200 and [m["modelName"] for m in first["models"]] == ["digits"], first
    status, second = call(f"{base}/models?limit=1&next_page_token={first['nextPageToken']}")
    assert [m["modelName"] for m in second["models"]] == ["letters"] and "nextPageToken" not in second
    status, doc = call(f"{base}/models/digits")
    assert status == 200 and doc["modelUrl"] == "/opt/ml/models/digits/model"

    assert load(base, "digits", "/opt/ml/models/digits/model")[0] == 409
    assert invoke(base, "nobody", png(1))[0] == 404
    assert call(f"{base}/models/nobody")[0] == 404
    assert call(f"{base}/models/nobody", "DELETE")[0] == 404
    assert call(f"{base}/models?next_page_token=%%%")[0] == 400


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/model.tar.gz",  # remote: never fetched
        "s3://bucket/model.tar.gz",
        "/etc",  # outside /opt/ml/models
        "/opt/ml/models/outside",  # a link that leads outside
        "/opt/ml/models/../../../etc",
        "relative/model",
        "/opt/ml/models",
    ],
)
def test_urls_outside_the_models_dir_are_refused(endpoint, url):
    status, doc = load(endpoint["url"], "intruder", url)
    assert status == 400, doc
    assert call(f"{endpoint['url']}/models/intruder")[0] == 404


def test_malformed_requests_and_no_way_to_the_model_servers_own_api(endpoint):
    base = endpoint["url"]
    assert call(f"{base}/models", "POST", b"not json", {"Content-Type": "application/json"})[0] == 400
    assert call(f"{base}/models", "POST", b'{"model_name": "x"}', {"Content-Type": "application/json"})[0] == 400
    # MMS's management API takes its arguments in the query string: here they are ignored.
    status, _ = call(f"{base}/models?url=https://example.com/m.mar&model_name=x", "POST", b"{}")
    assert status == 400 and call(f"{base}/models/x")[0] == 404
    assert call(f"{base}/models/digits", "PUT", b"{}")[0] == 405
    for path in ("/invocations", "/predictions/model", "/api-description", "/models/digits/invoke/more"):
        assert call(f"{base}{path}", "POST", b"x")[0] == 404, path
    # The model server listens on Unix sockets only: the front's port is the one TCP listener the
    # container's processes hold (the host's network is shared: other processes' sockets have no pid here).
    probe = (
        "import psutil; "
        "print(sorted({c.laddr.port for c in psutil.net_connections('tcp') if c.status == 'LISTEN' and c.pid}))"
    )
    listening = json.loads(du.run(["exec", endpoint["name"], "python3", "-c", probe], check=True).stdout)
    assert listening == [endpoint["port"]], listening


def _cgroup_bytes(container: dict) -> int:
    """The container's memory in use, the kernel's droppable page cache aside (as docker stats counts it)."""
    usage = int(du.memory_usage_file(container["id"]).read_text())
    stat = (du.memory_usage_file(container["id"]).parent / "memory.stat").read_text().split()
    fields = dict(zip(stat[::2], stat[1::2], strict=True))
    return usage - int(fields.get("inactive_file", fields.get("total_inactive_file", 0)))


def test_delete_frees_memory_and_507_when_memory_does_not_allow_another(serve_image, models_root, tmp_path_factory):
    container = start(serve_image, models_root, tmp_path_factory)
    try:
        base = container["url"]
        before = _cgroup_bytes(container)
        status, doc = load(base, "digits", "/opt/ml/models/digits/model")
        assert status == 200, doc
        loaded = _cgroup_bytes(container)
        cost = doc["memoryBytes"]
        print(f"load: +{(loaded - before) / 2**20:.0f} MiB in the cgroup, {cost / 2**20:.0f} MiB measured (PSS)")
        # Room for a quarter of a model: the 507 says how much the server keeps free for request bodies.
        probe = loaded + cost // 4
        du.run(["update", "--memory", str(probe), "--memory-swap", str(probe), container["name"]], check=True)
        status, doc = load(base, "letters", "/opt/ml/models/letters/model")
        assert status == 507, doc
        reserve = int(re.search(r"(\d+) MB is kept for requests", doc["error"]).group(1)) * 2**20  # type: ignore[union-attr]
        # Room for three quarters of a model beside that reserve: the next load must be refused before
        # it starts, not killed; once the model is unloaded (freeing more than half of what it added
        # to the cgroup, whose growth is under the PSS measured) there is room.
        limit = loaded + reserve + 3 * cost // 4
        du.run(["update", "--memory", str(limit), "--memory-swap", str(limit), container["name"]], check=True)
        status, doc = load(base, "letters", "/opt/ml/models/letters/model")
        assert status == 507, doc
        assert invoke(base, "digits", png(3))[0] == 200  # what is loaded keeps serving

        status, _ = call(f"{base}/models/digits", "DELETE")
        assert status == 200
        time.sleep(1)
        freed = loaded - _cgroup_bytes(container)
        print(f"DELETE freed {freed / 2**20:.0f} MiB")
        assert freed > (loaded - before) // 2, (freed, loaded - before)
        assert invoke(base, "digits", png(3))[0] == 404
        if serve_image == du.SERVE_CPU_IMAGE:
            # There `letters` is served in fp32, a file four times the INT8 `digits`: it is sized at
            # what `digits` cost per byte and refused before it starts, not killed while loading.
            status, doc = load(base, "letters", "/opt/ml/models/letters/model")
            assert status == 507 and "not enough memory for another model" in doc["error"], doc
        # Room again for what was measured
        status, doc = load(base, "digits", "/opt/ml/models/digits/model")
        assert status == 200, doc
        assert invoke(base, "digits", png(3))[0] == 200
    finally:
        du.run(["rm", "-f", container["name"]])


def test_without_the_variable_there_is_no_model_api(endpoint, serve_image, trained_model):
    container = du.start_serving(serve_image, Path(trained_model["model_dir"]), "byoc-test-single")
    try:
        assert call(f"{container['url']}/models")[0] == 404
        assert call(f"{container['url']}/models/x/invoke", "POST", b"x")[0] == 404
    finally:
        du.run(["rm", "-f", container["name"]])
