"""byoc.local.runtime's multi-model endpoints (TargetModel) and byoc.local.model_store: an unmodified
boto3 client against the local runtime, in front of a fake container that implements SageMaker's
multi-model contract (POST/GET/DELETE /models, POST /models/{name}/invoke; 409, 404, and 507 past
a configurable number of loaded models), so that loading, LRU unloading and the retries are seen
request by request. The real serving image runs at the end, when it supports the contract.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from byoc.local import model_store
from byoc.local import runtime as local_runtime
from byoc.local.model_store import model_name
from tests import netutil
from tests.aws_requests import unchecked


def tarball(path: Path, files: dict[str, bytes]) -> Path:
    """A model.tar.gz holding `files` at its root, as a SageMaker model artifact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def fake_model(path: Path, label: str, broken: bool = False) -> Path:
    """The fake container's model format: labels.json naming the one label it answers."""
    doc = {"label": label, "broken": broken}
    return tarball(path, {"labels.json": json.dumps(doc).encode(), "weights.bin": b"\0" * 64})


class FakeMultiModelContainer:
    """A multi-model serving container on 127.0.0.1: /opt/ml/models is `models_dir` on the host;
    at most `capacity` models load at once (the next gets 507); `load_delay` slows each load so
    that concurrent first requests overlap. `events` records (method, path) of every request."""

    def __init__(self, models_dir: Path, capacity: int = 10, load_delay: float = 0.0):
        self.models_dir = models_dir
        self.capacity = capacity
        self.load_delay = load_delay
        self.loaded: dict[str, str] = {}  # name -> label
        self.events: list[tuple[str, str]] = []
        self.invocations: list[dict] = []
        self.held = threading.Event()  # an invocation with body b"hold" has arrived...
        self.release = threading.Event()  # ...and answers once this is set
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _reply(self, status: int, doc: dict) -> None:
                data = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def do_POST(self):  # noqa: N802
                body = self._body()
                fake.events.append(("POST", self.path))
                if self.path == "/models":
                    self._reply(*fake.load(json.loads(body)))
                elif self.path.startswith("/models/") and self.path.endswith("/invoke"):
                    name = self.path.split("/")[2]
                    fake.invocations.append({"name": name, "body": body, "headers": dict(self.headers.items())})
                    if body == b"hold":
                        fake.held.set()
                        fake.release.wait(30)
                    label = fake.loaded.get(name)
                    if label is None:
                        self._reply(404, {"error": f"model {name} is not loaded", "status": 404})
                    else:
                        self._reply(200, {"predictions": [{"label": label, "index": 0, "score": 1.0}]})
                else:
                    self._reply(404, {"error": "no such path"})

            def do_GET(self):  # noqa: N802
                fake.events.append(("GET", self.path))
                models = [{"modelName": n, "modelUrl": f"/opt/ml/models/{n}/model"} for n in fake.loaded]
                self._reply(200, {"models": models})

            def do_DELETE(self):  # noqa: N802
                fake.events.append(("DELETE", self.path))
                name = self.path.split("/")[2]
                with fake.lock:
                    found = fake.loaded.pop(name, None)
                self._reply(200 if found else 404, {"status": f"unloaded {name}" if found else "not loaded"})

            def log_message(self, *args):
                pass

        self.server, self.url = netutil.http_server(Handler)

    def load(self, doc: dict) -> tuple[int, dict]:
        name, url = doc["model_name"], doc["url"]
        if not url.startswith("/opt/ml/models/"):
            return 400, {"error": f"url must be under /opt/ml/models: {url}"}
        time.sleep(self.load_delay)
        with self.lock:
            if name in self.loaded:
                return 409, {"error": f"model {name} is already loaded"}
            if len(self.loaded) >= self.capacity:
                return 507, {"error": "not enough memory to load another model"}
            meta = json.loads((self.models_dir / url.removeprefix("/opt/ml/models/") / "labels.json").read_text())
            if meta["broken"]:
                return 400, {"error": "model.json: unknown architecture 'resnet9000'"}
            self.loaded[name] = meta["label"]
        return 200, {"status": f"loaded {name}"}

    def paths(self, method: str) -> list[str]:
        return [path for m, path in self.events if m == method]

    def restart(self) -> None:
        """What a restarted container holds: nothing."""
        with self.lock:
            self.loaded.clear()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def store(tmp_path) -> Path:
    root = tmp_path / "store"
    for key, label in (("dog-a.tar.gz", "akita"), ("dog-b.tar.gz", "beagle"), ("nested/dog-c.tar.gz", "corgi")):
        fake_model(root / key, label)
    fake_model(root / "broken.tar.gz", "none", broken=True)
    return root


@pytest.fixture
def models_dir(tmp_path) -> Path:
    path = tmp_path / "models"
    path.mkdir()
    return path


def client_for(url: str):
    """An unmodified boto3 client (no retries, so each call is one request)."""
    return boto3.client(
        "sagemaker-runtime",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
        config=Config(retries={"mode": "standard", "total_max_attempts": 1}),
    )


class Setup:
    """A fake container, the local runtime in front of it (endpoint `mme`, plus a single-model
    endpoint `single` on the same container), and a client."""

    def __init__(self, store: Path, models_dir: Path, s3=None, store_location: str | None = None, **fake):
        self.container = FakeMultiModelContainer(models_dir, **fake)
        self.models_dir = models_dir
        configs = {"mme": model_store.MultiModelConfig(store_location or str(store), models_dir)}
        self.server, self.url = local_runtime.start_in_thread(
            {"mme": self.container.url, "single": self.container.url}, timeout=10, s3=s3, multi_models=configs
        )
        self.client = client_for(self.url)
        self.endpoint = self.server.runtime.multi_models["mme"]

    def label(self, key: str, **kwargs) -> str:
        response = self.client.invoke_endpoint(
            EndpointName="mme", TargetModel=key, Body=b"img", ContentType="image/png", **kwargs
        )
        return json.loads(response["Body"].read())["predictions"][0]["label"]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.container.close()


@pytest.fixture
def make_setup(store, models_dir):
    made: list[Setup] = []

    def make(**fake) -> Setup:
        made.append(Setup(store, models_dir, **fake))
        return made[-1]

    yield make
    for setup in made:
        setup.close()


def test_each_target_model_answers_with_its_own_labels(make_setup, models_dir):
    setup = make_setup()
    assert setup.label("dog-a.tar.gz") == "akita"
    assert setup.label("dog-b.tar.gz") == "beagle"
    assert setup.label("nested/dog-c.tar.gz") == "corgi"  # a key is a path below the store
    assert setup.label("dog-a.tar.gz", Accept="application/json", CustomAttributes="top_k=1") == "akita"
    name = model_name("dog-a.tar.gz")
    assert len(name) == 32 and name.isalnum()  # opaque and safe, whatever the key holds
    assert (models_dir / name / "model" / "labels.json").is_file()
    loads = setup.container.paths("POST").count("/models")
    assert loads == 3  # once per model, not per request
    seen = setup.container.invocations[-1]
    assert seen["name"] == name and seen["body"] == b"img"
    assert seen["headers"]["X-Amzn-SageMaker-Target-Model"] == "dog-a.tar.gz"
    assert seen["headers"]["Content-Type"] == "image/png" and seen["headers"]["Accept"] == "application/json"
    assert seen["headers"]["X-Amzn-SageMaker-Custom-Attributes"] == "top_k=1"
    assert setup.endpoint.loaded() == ["dog-b.tar.gz", "nested/dog-c.tar.gz", "dog-a.tar.gz"]


def test_507_unloads_the_least_recently_used_model_and_retries(make_setup):
    setup = make_setup(capacity=2)
    for key in ("dog-a.tar.gz", "dog-b.tar.gz", "dog-a.tar.gz"):  # b is now the least recently used
        setup.label(key)
    assert setup.label("nested/dog-c.tar.gz") == "corgi"
    assert setup.container.paths("DELETE") == [f"/models/{model_name('dog-b.tar.gz')}"]
    assert setup.endpoint.loaded() == ["dog-a.tar.gz", "nested/dog-c.tar.gz"]
    assert setup.label("dog-b.tar.gz") == "beagle"  # and now a goes
    assert setup.container.paths("DELETE")[-1] == f"/models/{model_name('dog-a.tar.gz')}"
    assert set(setup.container.loaded) == {model_name("nested/dog-c.tar.gz"), model_name("dog-b.tar.gz")}


def test_507_spares_a_model_with_requests_running_when_another_can_go(make_setup):
    setup = make_setup(capacity=2)
    setup.label("dog-a.tar.gz")
    setup.label("dog-b.tar.gz")
    held: list[int] = []
    busy = threading.Thread(
        target=lambda: held.append(setup.endpoint.invoke("dog-a.tar.gz", b"hold", {"Content-Type": "image/png"})[0])
    )
    busy.start()
    assert setup.container.held.wait(10)
    setup.label("dog-b.tar.gz")  # a is now the least recently used, but busy
    assert setup.label("nested/dog-c.tar.gz") == "corgi"
    assert setup.container.paths("DELETE") == [f"/models/{model_name('dog-b.tar.gz')}"]
    setup.container.release.set()
    busy.join(10)
    assert held == [200]


def test_507_with_nothing_to_unload_is_a_model_error(make_setup):
    setup = make_setup(capacity=0)
    with pytest.raises(setup.client.exceptions.ModelError) as caught:
        setup.label("dog-a.tar.gz")
    err = caught.value.response
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert err["OriginalStatusCode"] == 507
    assert "not enough memory" in err["OriginalMessage"] and "no other model to unload" in err["OriginalMessage"]
    assert err["Error"]["Message"].startswith("Received server error (507) from primary")
    assert setup.container.paths("DELETE") == []


def test_unknown_key_is_a_validation_error_like_sagemaker(make_setup, store):
    fake_model(store.parent / "outside.tar.gz", "escaped")
    setup = make_setup()
    for key in ("dog-z.tar.gz", "../outside.tar.gz", str(store.parent / "outside.tar.gz"), "nested"):
        with pytest.raises(setup.client.exceptions.ValidationError) as caught:
            setup.label(key)
        message = caught.value.response["Error"]["Message"]
        assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert message.startswith(f"Failed to download model data(directory: {store}, key: {key}). Please ensure")
    assert setup.container.events == []  # the container never heard of them


def test_broken_model_is_a_model_error_with_its_reason_and_the_others_keep_serving(make_setup):
    setup = make_setup()
    assert setup.label("dog-a.tar.gz") == "akita"
    with pytest.raises(setup.client.exceptions.ModelError) as caught:
        setup.label("broken.tar.gz")
    assert caught.value.response["OriginalStatusCode"] == 400
    assert "unknown architecture 'resnet9000'" in json.loads(caught.value.response["OriginalMessage"])["error"]
    assert setup.label("dog-a.tar.gz") == "akita"
    assert setup.endpoint.loaded() == ["dog-a.tar.gz"]


def test_a_restarted_container_gets_the_model_loaded_again_once(make_setup):
    setup = make_setup()
    assert setup.label("dog-a.tar.gz") == "akita"
    setup.container.restart()
    assert setup.label("dog-a.tar.gz") == "akita"
    name = model_name("dog-a.tar.gz")
    assert setup.container.paths("POST") == [
        "/models",
        f"/models/{name}/invoke",
        f"/models/{name}/invoke",  # 404: not loaded
        "/models",
        f"/models/{name}/invoke",
    ]


def test_concurrent_first_requests_load_a_model_once(make_setup):
    setup = make_setup(load_delay=0.3)
    labels: list[str] = []
    errors: list[BaseException] = []

    def call():
        try:
            labels.append(setup.label("dog-a.tar.gz"))
        except BaseException as exc:  # reported below, with the others
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == [] and labels == ["akita"] * 8
    assert setup.container.paths("POST").count("/models") == 1
    assert setup.endpoint._key_locks == {}  # the per-key locks are gone once nobody holds them


def test_models_an_earlier_run_left_loaded_are_listed_and_unloaded_on_507(make_setup, store, models_dir):
    first = make_setup(capacity=1)
    assert first.label("dog-a.tar.gz") == "akita"
    runtime = local_runtime.Runtime(  # a new runtime on the same container: it knows of no loaded model
        {"mme": first.container.url}, multi_models={"mme": model_store.MultiModelConfig(str(store), models_dir)}
    )
    reply = runtime.invoke("mme", b"img", {"Content-Type": "image/png"}, "dog-b.tar.gz")
    assert reply.status == 200 and json.loads(reply.body)["predictions"][0]["label"] == "beagle"
    assert ("GET", "/models") in first.container.events
    assert first.container.paths("DELETE") == [f"/models/{model_name('dog-a.tar.gz')}"]
    assert runtime.invoke("mme", b"img", {}, "dog-a.tar.gz").status == 200  # 507 again: b goes, a loads
    runtime.close()


def test_loaded_models_are_bounded_in_memory(store, models_dir):
    container = FakeMultiModelContainer(models_dir)
    try:
        endpoint = model_store.MultiModelEndpoint(
            container.url, model_store.LocalStore(store), models_dir, timeout=10, max_tracked=2
        )
        for key in ("dog-a.tar.gz", "dog-b.tar.gz", "nested/dog-c.tar.gz"):
            assert endpoint.invoke(key, b"img", {"Content-Type": "image/png"})[0] == 200
        assert endpoint.loaded() == ["dog-b.tar.gz", "nested/dog-c.tar.gz"]
        assert container.paths("DELETE") == [f"/models/{model_name('dog-a.tar.gz')}"]
    finally:
        container.close()


def test_target_model_rules_follow_botocore_and_sagemaker(make_setup):
    setup = make_setup()
    with pytest.raises(setup.client.exceptions.ValidationError) as caught:
        setup.client.invoke_endpoint(EndpointName="single", TargetModel="dog-a.tar.gz", Body=b"img")
    assert caught.value.response["Error"]["Message"] == (
        "Endpoint single is not a multi-model endpoint and does not support target model header."
    )
    with pytest.raises(setup.client.exceptions.ValidationError) as caught:
        setup.client.invoke_endpoint(EndpointName="mme", Body=b"img")
    request_id = caught.value.response["ResponseMetadata"]["RequestId"]
    assert caught.value.response["Error"]["Message"] == f"Request {request_id} is missing a target model header."
    with unchecked(setup.client), pytest.raises(setup.client.exceptions.ValidationError) as caught:
        setup.label("x" * 1025)
    assert (
        "at 'targetModel' failed to satisfy constraint: Member must have length less than or equal to 1024"
        in (caught.value.response["Error"]["Message"])
    )
    assert model_store.target_model_constraint("dog-a.tar.gz") is None
    for bad in ("", " lead", "tab\tin", "caf\u00e9.tar.gz"):
        assert model_store.target_model_constraint(bad) is not None
    assert setup.container.events == []


def test_unsafe_tarballs_are_refused(tmp_path):
    def evil(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", size: int = 4) -> Path:
        path = tmp_path / f"evil-{len(list(tmp_path.iterdir()))}.tar.gz"
        with tarfile.open(path, "w:gz") as tar:
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.size = kind, link, size if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(b"\0" * info.size) if kind == tarfile.REGTYPE else None)
        return path

    cases = {
        "a path out of the directory": evil("../escaped.txt"),
        "an absolute path": evil("/tmp/absolute.txt"),
        "a link out": evil("link", tarfile.SYMTYPE, "/etc/passwd"),
        "a hard link out": evil("hard", tarfile.LNKTYPE, "../../etc/passwd"),
        "a device": evil("dev", tarfile.CHRTYPE),
    }
    for why, path in cases.items():
        dest = tmp_path / f"out-{path.stem}"
        dest.mkdir()
        with pytest.raises(model_store.InvalidModelData, match="unsafe entry"):
            model_store.unpack(path, dest)
        assert not (tmp_path / "escaped.txt").exists(), why
    bomb = tarball(tmp_path / "bomb.tar.gz", {"a.bin": b"\0" * 5000, "b.bin": b"\0" * 5000})
    with pytest.raises(model_store.InvalidModelData, match="more than 8000 bytes unpacked"):
        model_store.unpack(bomb, tmp_path / "bomb-out", max_bytes=8000)
    with pytest.raises(model_store.InvalidModelData, match="more than 1 entries"):
        model_store.unpack(bomb, tmp_path / "many-out", max_members=1)
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tarball at all")
    with pytest.raises(model_store.InvalidModelData, match="not a readable tar archive"):
        model_store.unpack(tmp_path / "junk.tar.gz", tmp_path / "junk-out")


def test_a_tarball_that_cannot_be_unpacked_is_a_validation_error(make_setup, store, models_dir):
    (store / "junk.tar.gz").write_bytes(b"\x1f\x8b garbage")
    setup = make_setup()
    with pytest.raises(setup.client.exceptions.ValidationError) as caught:
        setup.label("junk.tar.gz")
    assert caught.value.response["Error"]["Message"].startswith(
        "Failed to extract model data for TargetModel junk.tar.gz: not a readable tar archive"
    )
    assert not (models_dir / model_name("junk.tar.gz") / "model").exists()  # nothing half-unpacked
    assert setup.container.events == []


def test_a_model_is_unpacked_once_and_again_when_its_tarball_changes(store, models_dir):
    target = models_dir / model_name("dog-a.tar.gz") / "model" / "labels.json"
    model_store.prepare(model_store.LocalStore(store), "dog-a.tar.gz", models_dir, model_name("dog-a.tar.gz"))
    first = target.stat().st_ino
    model_store.prepare(model_store.LocalStore(store), "dog-a.tar.gz", models_dir, model_name("dog-a.tar.gz"))
    assert target.stat().st_ino == first  # reused
    fake_model(store / "dog-a.tar.gz", "airedale")
    os.utime(store / "dog-a.tar.gz", ns=(time.time_ns(), time.time_ns() + 10**9))
    model_store.prepare(model_store.LocalStore(store), "dog-a.tar.gz", models_dir, model_name("dog-a.tar.gz"))
    assert json.loads(target.read_text())["label"] == "airedale"
    assert target.parent.stat().st_mode & 0o755 == 0o755  # readable by the container's own user


def test_an_s3_store_is_read_with_the_runtime_s3_client(store, models_dir, moto_server):
    s3 = boto3.client(
        "s3",
        endpoint_url=moto_server,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    s3.create_bucket(Bucket="byoc-mme")
    s3.put_object(Bucket="byoc-mme", Key="models/dog-b.tar.gz", Body=(store / "dog-b.tar.gz").read_bytes())
    setup = Setup(store, models_dir, s3=s3, store_location="s3://byoc-mme/models/")
    try:
        assert setup.label("dog-b.tar.gz") == "beagle"
        with pytest.raises(setup.client.exceptions.ValidationError) as caught:
            setup.label("dog-a.tar.gz")
        assert caught.value.response["Error"]["Message"].startswith(
            "Failed to download model data(bucket: byoc-mme, key: models/dog-a.tar.gz). Please ensure that there is "
            "an object located at the URL and that the role passed to CreateModel has permissions"
        )
    finally:
        setup.close()


def test_parse_multi_model_checks_its_flags(store, tmp_path):
    endpoints = {"mme": "http://127.0.0.1:8080", "other": "http://127.0.0.1:8081"}
    parsed = model_store.parse_multi_model([f"mme={store}"], [f"mme={tmp_path / 'new'}"], endpoints)
    assert parsed == {"mme": model_store.MultiModelConfig(str(store), tmp_path / "new")}
    assert (tmp_path / "new").is_dir()
    assert model_store.parse_multi_model(["mme=s3://bucket/models/"], [f"mme={tmp_path}"], endpoints)
    for stores, dirs, message in (
        ([f"mme={store}"], [], "needs both --model-store and --models-dir: no --models-dir mme="),
        ([], [f"mme={tmp_path}"], "no --model-store mme="),
        ([f"nope={store}"], [f"nope={tmp_path}"], "no --endpoint nope=URL"),
        ([f"mme={tmp_path / 'missing'}"], [f"mme={tmp_path}"], "not a directory"),
        (["mme=s3://"], [f"mme={tmp_path}"], "expected s3://BUCKET/PREFIX/"),
        (["mme"], [], "expected NAME=DIR or NAME=s3://"),
    ):
        with pytest.raises(local_runtime.ConfigError, match=message):
            model_store.parse_multi_model(stores, dirs, endpoints)
    with pytest.raises(local_runtime.ConfigError, match="asynchronous inference does not support multi-model"):
        local_runtime.Runtime(
            endpoints,
            async_endpoints={"mme": local_runtime.AsyncConfig("s3://b/o", "s3://b/f")},
            s3=object(),
            multi_models=parsed,
        )


def test_cli_serves_a_multi_model_endpoint(store, models_dir):
    container = FakeMultiModelContainer(models_dir)
    try:
        with netutil.local_runtime(
            "--endpoint", f"mme={container.url}", "--model-store", f"mme={store}", "--models-dir", f"mme={models_dir}"
        ) as (url, output):
            assert output.lines[0] == (
                f"endpoint mme -> {container.url} (multi-model: models from {store}, unpacked into {models_dir} "
                "= /opt/ml/models)\n"
            )
            client = client_for(url)
            for key, label in (("dog-a.tar.gz", "akita"), ("dog-b.tar.gz", "beagle")):
                response = client.invoke_endpoint(EndpointName="mme", TargetModel=key, Body=b"img")
                assert json.loads(response["Body"].read())["predictions"][0]["label"] == label
    finally:
        container.close()


# --- the real serving image ------------------------------------------------------------------------

TWO_MODELS = {"dogs-a.tar.gz": ["akita", "beagle", "collie"], "team/dogs-b.tar.gz": ["dingo", "eskimo", "finnish"]}


def real_model(path: Path, labels: list[str], seed: int) -> Path:
    """A small byoc artifact (resnet18 at 32 px, seeded random weights, with its ONNX copy for
    byoc-serve:cpu) packed as model.tar.gz."""
    import torch

    from byoc.core import artifact, onnx_export
    from byoc.core.preprocessing import Preprocessing
    from byoc.training import model

    torch.manual_seed(seed)
    work = path.parent / f".{path.name}.d"
    meta = artifact.ModelMeta(arch="resnet18", labels=labels, preprocessing=Preprocessing.for_size(32))
    artifact.save(work, model.build("resnet18", len(labels)), meta)
    onnx_export.export(work)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for file in sorted(work.iterdir()):
            tar.add(file, arcname=file.name)
    return path


def png() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (48, 40), (200, 120, 40)).save(out, format="PNG")
    return out.getvalue()


def start_multi_model(image: str, models_dir: Path, *env: str) -> dict:
    """The serving image under SAGEMAKER_MULTI_MODEL=true with `models_dir` at /opt/ml/models, on a
    loopback port it chose (its ready line names it): {'name', 'url'}."""
    import uuid

    from tests import dockerutil as du

    name = f"byoc-test-mme-{uuid.uuid4().hex[:8]}"
    empty = models_dir.parent / "no-single-model"
    empty.mkdir(exist_ok=True)
    args = du.serve_args(image, empty, 0, name, "SAGEMAKER_MULTI_MODEL=true", *env)
    args[1:1] = ["-v", f"{models_dir}:/opt/ml/models:ro"]
    du.run(args, check=True)
    try:
        log = du.wait_log(name, du.SERVE_READY, 240)
        ready = next(json.loads(line) for line in log.splitlines() if line.startswith(du.SERVE_READY))
        url = f"http://127.0.0.1:{int(ready['port'])}"
        du.wait_http(f"{url}/ping", timeout=30)
    except BaseException:
        du.run(["rm", "-f", name])
        raise
    return {"name": name, "url": url}


@pytest.fixture(scope="module")
def real_store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mme-store")
    for seed, (key, labels) in enumerate(TWO_MODELS.items()):
        real_model(root / key, labels, seed)
    tarball(root / "broken.tar.gz", {"model.json": b'{"format": "byoc-image-classifier", "arch": "resnet9000"'})
    return root


@pytest.fixture(scope="module")
def mme_container(serve_image, tmp_path_factory):
    """The serving image as a multi-model container that holds one model at a time
    (BYOC_MAX_LOADED_MODELS=1: the second load is a 507, as when memory runs out)."""
    from tests import dockerutil as du

    labels = du.run(["image", "inspect", "-f", "{{json .Config.Labels}}", serve_image], check=True).stdout
    if json.loads(labels or "{}").get("com.amazonaws.sagemaker.capabilities.multi-models") != "true":
        pytest.skip(f"{serve_image} does not declare the multi-model capability yet: rebuild it (make images)")
    models_dir = tmp_path_factory.mktemp("mme") / "models"
    models_dir.mkdir()
    models_dir.chmod(0o755)
    container = start_multi_model(
        serve_image, models_dir, "BYOC_MAX_LOADED_MODELS=1", "SAGEMAKER_MODEL_SERVER_WORKERS=1"
    )
    try:
        yield {**container, "models_dir": models_dir}
    except BaseException:
        print(du.logs(container["name"])[-6000:])
        raise
    finally:
        du.run(["rm", "-f", container["name"]])


def container_models(url: str) -> list[str]:
    import urllib.request

    with urllib.request.urlopen(f"{url}/models", timeout=10) as resp:
        return [m["modelName"] for m in json.loads(resp.read())["models"]]


@pytest.mark.container
def test_real_container_serves_each_target_model_and_unloads_the_least_recently_used(mme_container, real_store):
    args = ("--endpoint", f"mme={mme_container['url']}", "--model-store", f"mme={real_store}")
    with netutil.local_runtime(*args, "--models-dir", f"mme={mme_container['models_dir']}") as (url, output):
        client = client_for(url)
        image = png()

        def top(key: str) -> list[str]:
            response = client.invoke_endpoint(
                EndpointName="mme", TargetModel=key, Body=image, ContentType="image/png", CustomAttributes="top_k=3"
            )
            return sorted(p["label"] for p in json.loads(response["Body"].read())["predictions"])

        for _ in range(2):  # a, b, a, b: with room for one model, every switch unloads the other
            for key, labels in TWO_MODELS.items():
                assert top(key) == sorted(labels)
                assert container_models(mme_container["url"]) == [model_name(key)]
        with pytest.raises(client.exceptions.ModelError) as caught:
            top("broken.tar.gz")
        assert 400 <= caught.value.response["OriginalStatusCode"] < 600
        assert caught.value.response["OriginalMessage"]  # the container's reason
        with pytest.raises(client.exceptions.ValidationError, match="Failed to download model data"):
            top("missing.tar.gz")
        assert top("dogs-a.tar.gz") == sorted(TWO_MODELS["dogs-a.tar.gz"])  # the others keep serving
        assert "unloaded team/dogs-b.tar.gz (least recently used)" in output.text()
