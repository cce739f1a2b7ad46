"""byoc.serve.models in-process: the load request's checks, the registry's 409 / 404 / 507 rules,
its measured memory, pages of GET /models, and an unload that waits for requests in flight. The
model server is a stand-in here; tests/test_serve_container_multimodel.py runs the real one."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from byoc.serve import models
from byoc.serve.http_errors import BadRequest, RequestError


class FakeServer:
    """What the registry uses of byoc.serve.mms.ModelServer. A model whose dir is named `broken`
    reports a load failure, as the handler does (byoc.serve.startup.reported)."""

    def __init__(self, workdir: Path):
        self.store = workdir / "model-store"
        self.registered: set[str] = set()
        self.manifests: dict[str, tuple[Path | None, Path | None]] = {}

    def write_manifest(self, name, model_dir=None, report=None):
        (self.store / name).mkdir(parents=True, exist_ok=True)
        self.manifests[name] = (model_dir, report)

    def manage(self, method, path, timeout=10):
        name = path.split("?", 1)[0].rsplit("/", 1)[-1] if method == "DELETE" else path.split("model_name=")[1][:25]
        if method == "POST":
            self.registered.add(name)
            model_dir, report = self.manifests[name]
            if model_dir is not None and model_dir.name == "broken":
                report.write_text("model.json is not a byoc-image-classifier artifact\n")
            return 200, "{}"
        self.registered.discard(name)
        return 200, "{}"

    def alive(self):
        return True

    def probe(self, timeout=2.0, model="model"):
        return model in self.registered and self.manifests[model][0].name != "broken"


@pytest.fixture
def root(tmp_path) -> Path:
    root = tmp_path / "opt-ml-models"
    for name in ("a", "b", "c", "broken"):
        (root / name).mkdir(parents=True)
        (root / name / "model.pt").write_bytes(b"x" * 1000)
    return root


def registry(tmp_path, root, forward=None, **kw) -> models.Registry:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    options = {
        "workers": 1,
        "calls": 2,
        "batch_size": 4,
        "max_batch_delay": 0.0,
        "max_request_bytes": 1 << 20,
        "load_timeout": 5,
        "unload_timeout": 5,
        **kw,
    }
    forward = forward or (lambda payload, headers, model: (200, json.dumps({"model": model}).encode()))
    return models.Registry(FakeServer(work), forward, root, work, **options)


def doc(name: str, url: str) -> bytes:
    return json.dumps({"model_name": name, "url": url}).encode()


def status_of(call) -> int:
    with pytest.raises(RequestError) as info:
        call()
    return info.value.status


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[]",
        b"not json",
        b'{"model_name": "a"}',
        b'{"model_name": "", "url": "/x"}',
        b'{"model_name": 1, "url": "/x"}',
    ],
)
def test_malformed_load_requests_are_400(body):
    with pytest.raises(BadRequest):
        models.parse_load(body)


def test_a_model_name_with_control_characters_or_too_long_is_refused():
    for name in ("a\nb", "x" * (models.MAX_NAME + 1)):
        with pytest.raises(BadRequest):
            models.parse_load(doc(name, "/opt/ml/models/a"))


def test_urls_resolve_only_under_the_models_dir(root, tmp_path):
    (root / "link").symlink_to(tmp_path)
    assert models.resolve_url(str(root / "a"), root) == (root / "a").resolve()
    for url in (
        "http://h/m.tar.gz",
        "s3://b/k",
        "relative",
        "/etc",
        str(root / "link"),
        str(root / ".." / "a"),
        str(root),
    ):
        with pytest.raises(BadRequest):
            models.resolve_url(url, root)
    assert status_of(lambda: models.resolve_url(str(root / "missing"), root)) == 404


def test_internal_names_are_safe_and_stable():
    assert models.internal_name("a/../b c") == models.internal_name("a/../b c")
    assert models.internal_name("x").isalnum() and models.internal_name("x") != models.internal_name("y")


def test_load_invoke_conflict_and_unload(tmp_path, root, monkeypatch):
    monkeypatch.setattr(models.sizing, "memory_available", lambda droppable_cache=False: 1 << 40)
    reg = registry(tmp_path, root)
    loaded = reg.load(doc("model A", str(root / "a")))
    assert loaded["modelName"] == "model A" and loaded["modelUrl"] == str(root / "a")
    assert status_of(lambda: reg.load(doc("model A", str(root / "b")))) == 409
    status, body = reg.invoke("model A", lambda batcher: batcher.submit(b"img", {}))
    assert status == 200 and json.loads(body)["model"] == models.internal_name("model A")
    assert reg.unload("model A")["status"]
    assert status_of(lambda: reg.invoke("model A", lambda batcher: batcher.submit(b"img", {}))) == 404
    assert status_of(lambda: reg.unload("model A")) == 404
    assert not reg.server.registered and not list(reg.server.store.iterdir())


def test_a_broken_model_is_refused_with_its_reason_and_unregistered(tmp_path, root, monkeypatch):
    monkeypatch.setattr(models.sizing, "memory_available", lambda droppable_cache=False: 1 << 40)
    reg = registry(tmp_path, root)
    reg.load(doc("a", str(root / "a")))
    with pytest.raises(BadRequest, match="cannot be served: model.json is not"):
        reg.load(doc("bad", str(root / "broken")))
    assert models.internal_name("bad") not in reg.server.registered
    assert [m["modelName"] for m in reg.page("")["models"]] == ["a"]


def test_507_from_measured_memory_and_from_the_model_cap(tmp_path, root, monkeypatch):
    pss = iter([100 << 20, 400 << 20])  # before and after the first load: it took 300 MB
    monkeypatch.setattr(models, "tree_pss", lambda root=None: next(pss))
    monkeypatch.setattr(models.sizing, "memory_available", lambda droppable_cache=False: 310 << 20)
    reg = registry(tmp_path, root, max_request_bytes=1 << 20)  # reserve: 2 calls x 3 copies x 1 MB
    # Before any load: an estimate from the artifact (500 MB per worker): refused.
    assert status_of(lambda: reg.load(doc("a", str(root / "a")))) == 507
    monkeypatch.setattr(models.sizing, "memory_available", lambda droppable_cache=False: 1 << 40)
    assert reg.load(doc("a", str(root / "a")))["memoryBytes"] == 300 << 20
    monkeypatch.setattr(
        models.sizing, "memory_available", lambda droppable_cache=False: 305 << 20
    )  # 300 MB measured + 6 MB reserve > 305
    assert status_of(lambda: reg.load(doc("b", str(root / "b")))) == 507
    capped = registry(tmp_path, root, max_models=1)
    monkeypatch.setattr(models.sizing, "memory_available", lambda droppable_cache=False: 1 << 40)
    monkeypatch.setattr(models, "tree_pss", lambda root=None: 0)
    capped.load(doc("a", str(root / "a")))
    with pytest.raises(models.InsufficientStorage, match="BYOC_MAX_LOADED_MODELS"):
        capped.load(doc("b", str(root / "b")))


def test_a_model_with_a_larger_served_file_is_sized_at_the_cost_per_byte_measured(tmp_path, root, monkeypatch):
    """After an INT8 model (a quarter of the fp32 file), an fp32 one needs four times what the INT8 load
    measured, not the largest load seen; a model of the same size needs what was measured."""
    served = {"a": 1000, "b": 1000, "c": 4000}  # c: an fp32 copy beside a's and b's INT8 ones
    pss = iter([100 << 20, 400 << 20])  # a's load took 300 MB
    monkeypatch.setattr(models, "tree_pss", lambda root=None: next(pss))
    monkeypatch.setattr(models.sizing, "memory_available", lambda droppable_cache=False: 1 << 40)
    reg = registry(tmp_path, root, served_bytes=lambda path: served[path.name])
    reg.load(doc("a", str(root / "a")))
    assert reg.need(root / "b", 1000) == 300 << 20 and reg.need(root / "c", 4000) == 1200 << 20
    monkeypatch.setattr(models.sizing, "memory_available", lambda droppable_cache=False: 900 << 20)
    with pytest.raises(models.InsufficientStorage, match=r"this load takes about 1200 MB \(measured\)"):
        reg.load(doc("c", str(root / "c")))
    assert reg.need(root / "x", 0) == 300 << 20  # a served file of unknown size: the largest load seen


def test_pages_follow_next_page_token(tmp_path, root, monkeypatch):
    monkeypatch.setattr(models.sizing, "memory_available", lambda droppable_cache=False: 1 << 40)
    reg = registry(tmp_path, root)
    for name in ("c", "a", "b"):
        reg.load(doc(name, str(root / name)))
    seen, token = [], ""
    while True:
        page = reg.page(f"limit=2&next_page_token={token}" if token else "limit=2")
        seen += [m["modelName"] for m in page["models"]]
        if "nextPageToken" not in page:
            break
        token = page["nextPageToken"]
    assert seen == ["a", "b", "c"]
    for query in ("limit=0", "limit=x", f"limit={models.MAX_PAGE_SIZE + 1}", "next_page_token=%%%"):
        assert status_of(lambda q=query: reg.page(q)) == 400


def test_unload_waits_for_requests_in_flight(tmp_path, root, monkeypatch):
    monkeypatch.setattr(models.sizing, "memory_available", lambda droppable_cache=False: 1 << 40)
    started, release = threading.Event(), threading.Event()

    def slow(payload, headers, model):
        started.set()
        release.wait(5)
        return 200, b"{}"

    reg = registry(tmp_path, root, forward=slow)
    reg.load(doc("a", str(root / "a")))
    answers = []
    worker = threading.Thread(target=lambda: answers.append(reg.invoke("a", lambda b: b.submit(b"x", {}))))
    worker.start()
    started.wait(5)
    unloading = threading.Thread(target=reg.unload, args=("a",))
    unloading.start()
    time.sleep(0.2)
    assert models.internal_name("a") in reg.server.registered  # still there while a request runs
    release.set()
    worker.join(5)
    unloading.join(5)
    assert answers == [(200, b"{}")] and not reg.server.registered
