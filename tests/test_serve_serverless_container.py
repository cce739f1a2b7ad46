"""byoc-serve:cpu as SageMaker Serverless Inference runs it: under `docker run --memory 2g --cpus 1`
it sizes itself to one worker with one thread, takes bodies up to 4 MB and refuses larger ones with
a JSON 413, and a few concurrent 4 MB requests do not run it out of memory."""

from __future__ import annotations

import json
import struct
import urllib.error
import urllib.request
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests import dockerutil as du

pytestmark = pytest.mark.container

MIB = 1024**2
LIMIT = 4 * MIB  # serverless' request limit
SERVERLESS_OPTS = ("--memory", "2g", "--cpus", "1")
CONCURRENT = 4


@pytest.fixture(scope="module")
def serverless(serve_cpu_image, trained_model):
    """The CPU image under a serverless-sized memory limit, ready: {'url', 'name', 'id', 'config'}."""
    name = f"byoc-test-serverless-{uuid.uuid4().hex[:8]}"
    args = du.serve_args(serve_cpu_image, Path(trained_model["model_dir"]), 0, name)
    cid = du.run([*args[:2], *SERVERLESS_OPTS, *args[2:]], check=True).stdout.strip()
    try:
        log = du.wait_log(name, du.SERVE_READY, timeout=300)
        events = [json.loads(line) for line in log.splitlines() if line.startswith('{"event"')]
        port = next(e["port"] for e in events if e["event"] == "ready")
        url = f"http://127.0.0.1:{port}"
        du.wait_http(url + "/ping", timeout=30)
        yield {"url": url, "name": name, "id": cid, "config": next(e for e in events if e["event"] == "config")}
    finally:
        du.run(["rm", "-f", name])


def post(url: str, body: bytes, timeout: float = 120) -> tuple[int, str, bytes]:
    """(status, Content-Type, body) of POST /invocations."""
    req = urllib.request.Request(
        url + "/invocations", data=body, headers={"Content-Type": "application/x-image"}, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


def padded_png(png: bytes, size: int) -> bytes:
    """The same image, `size` bytes long: a private ancillary chunk after IHDR, which decoders skip."""
    at = 8 + 25  # the signature and IHDR (13 bytes of data, length, type and CRC)
    data = b"\0" * (size - len(png) - 12)
    chunk = struct.pack(">I", len(data)) + b"paDd" + data + struct.pack(">I", zlib.crc32(b"paDd" + data))
    return png[:at] + chunk + png[at:]


@pytest.fixture(scope="module")
def digit(trained_model) -> bytes:
    return next(iter(sorted((Path(trained_model["data"]) / "test").glob("*/*.png")))).read_bytes()


def test_sizes_itself_to_one_worker_with_the_threads_the_memory_implies(serverless):
    config = serverless["config"]
    print(json.dumps({k: config[k] for k in ("workers", "torch_threads", "workers_from", "vmargs", "cores")}))
    assert (config["workers"], config["torch_threads"], config["cores"]) == (1, 1, 1)
    assert config["workers_from"] == "serverless (memory limit 2048 MiB): one worker, 1 thread (cgroup CPU quota 1)"
    assert config["max_request_bytes"] == str(LIMIT) and config["serverless"] == "True"
    assert "-Xmx264m" in config["vmargs"]  # 2048 / 8 MiB of base heap plus two copies of one 4 MB body


def test_pings_and_predicts(serverless, digit):
    assert du.wait_http(serverless["url"] + "/ping", timeout=5) == 200
    status, ctype, body = post(serverless["url"], digit)
    assert status == 200 and ctype.startswith("application/json"), body[:500]
    assert json.loads(body)["predictions"]


def test_a_body_up_to_4_mb_is_taken_and_a_larger_one_is_a_json_413(serverless, digit):
    status, _, body = post(serverless["url"], padded_png(digit, LIMIT - 1))
    assert status == 200, body[:500]  # not only no 413: the padded image is answered
    status, ctype, body = post(serverless["url"], padded_png(digit, LIMIT + 1))
    assert status == 413 and ctype.startswith("application/json"), (status, body[:500])
    assert json.loads(body)["status"] == 413


def test_concurrent_4_mb_requests_fit_in_2_gb(serverless, digit):
    body = padded_png(digit, LIMIT - 1)
    usage = du.memory_usage_file(serverless["id"])
    before = int(usage.read_text())

    def burst():
        with ThreadPoolExecutor(CONCURRENT) as pool:
            return tuple(pool.map(lambda _: post(serverless["url"], body)[0], range(2 * CONCURRENT)))

    growth, statuses = du.peak_growth(usage, burst)
    print(f"cgroup memory {before / MIB:.0f} MiB at rest, peak +{growth / MIB:.0f} MiB under {CONCURRENT} x 4 MB")
    assert statuses == (200,) * (2 * CONCURRENT)
    state = du.run(["inspect", "-f", "{{.State.Running}} {{.State.OOMKilled}}", serverless["name"]]).stdout.split()
    assert state == ["true", "false"], du.logs(serverless["name"])[-3000:]
    assert before + growth < 2 * 1024**3
