"""The serving image under SageMaker batch transform's contract: GET /execution-parameters with and
without the SAGEMAKER_* variables, the payload limit followed by every internal limit (a 50 MB
JSON Lines request answered under SAGEMAKER_BATCH=true + SAGEMAKER_MAX_PAYLOAD_IN_MB=100, a 413
with the defaults), many images per request (JSON Lines line for line, tar, gzipped tar and zip
member by member, each answer the one a single real-time call gets), and archive bombs refused
with the container's memory flat. One container per group of settings, shared by its tests."""

from __future__ import annotations

import base64
import functools
import gzip
import http.client
import io
import json
import random
import socket
import struct
import tarfile
import time
import zipfile
import zlib
from pathlib import Path

import pytest
from PIL import Image

from tests import dockerutil as du
from tests.helpers.serving import png, request, same

pytestmark = pytest.mark.container

MB = 2**20
# Peak growth of the container's memory (cgroup) while a bomb is refused: the front holds the
# compressed body (at most 6 MB) and decompresses no more than the ratio floor (8 MiB) or the
# total (4 x the payload limit, 24 MiB) before it answers 413. Measured on 2 cores: see the prints.
MAX_BOMB_GROWTH = 64 * MB
BATCH_VARIABLES = (
    "SAGEMAKER_BATCH=true",
    "SAGEMAKER_MAX_PAYLOAD_IN_MB=100",
    "SAGEMAKER_BATCH_STRATEGY=SINGLE_RECORD",
    "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS=3",
)


def start(serve_image, trained_model, label: str, *env: str):
    container = du.start_serving(serve_image, trained_model["model_dir"], label, *env)
    log = du.logs(container["name"])
    [config] = [json.loads(x) for x in log.splitlines() if x.startswith('{"event": "config"')]
    return {**container, **trained_model, "config": config}


@pytest.fixture(scope="module")
def defaults(serve_image, trained_model):
    """No batch or payload variable: real-time's limits, the machine's worker count."""
    server = start(serve_image, trained_model, "byoc-test-batch-defaults")
    try:
        yield server
    finally:
        du.run(["rm", "-f", server["name"]])


@pytest.fixture(scope="module")
def batch(serve_image, trained_model):
    """Every batch transform variable set, as CreateTransformJob sets them; one worker."""
    server = start(serve_image, trained_model, "byoc-test-batch", *BATCH_VARIABLES, "SAGEMAKER_MODEL_SERVER_WORKERS=1")
    try:
        yield server
    finally:
        du.run(["rm", "-f", server["name"]])


def post(port: int, body: bytes, headers: dict, timeout: float = 300) -> tuple[int, bytes, dict]:
    """(status, raw body, headers) of one POST /invocations."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/invocations", body, headers)
        resp = conn.getresponse()
        return resp.status, resp.read(), dict(resp.headers)
    finally:
        conn.close()


def refused_before_the_body(port: int, length: int, content_type: str) -> tuple[int, dict]:
    """Headers of a `length`-byte POST with Expect: 100-continue: (status, JSON body) of the answer
    that comes instead of the 100 (the body is never sent)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(
            b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
            b"Expect: 100-continue\r\n\r\n" % (content_type.encode(), length)
        )
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        return resp.status, json.loads(resp.read())


def jsonl(images: list[bytes]) -> bytes:
    return b"\n".join(json.dumps({"b64": base64.b64encode(i).decode()}).encode() for i in images) + b"\n"


def held_out_images(server, count: int = 12) -> list[tuple[str, bytes]]:
    """`count` held-out test images from different classes: (name, PNG bytes)."""
    paths = sorted((Path(server["data"]) / "test").glob("*/*.png"))
    chosen = paths[:: max(1, len(paths) // count)][:count]
    return [(f"{p.parent.name}/{p.name}", p.read_bytes()) for p in chosen]


def single(port: int, image: bytes) -> list[dict]:
    """The real-time answer for one image."""
    status, doc, _ = request(port, "/invocations", image, {"Content-Type": "image/png"})
    assert status == 200, doc
    return doc["predictions"]


# ---- /execution-parameters and the payload limit


def test_execution_parameters_without_the_variables_are_the_machines(defaults):
    status, doc, headers = request(defaults["port"], "/execution-parameters")
    config = defaults["config"]
    assert status == 200 and headers["Content-Type"] == "application/json"
    # Outside SAGEMAKER_BATCH the body limit stays real-time's 6 MB, and no more is offered.
    assert doc == {"MaxConcurrentTransforms": config["workers"], "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 6}
    assert config["execution_parameters"] == doc and config["timeout"] == "60"


def test_execution_parameters_with_the_variables_are_theirs(batch):
    status, doc, _ = request(batch["port"], "/execution-parameters")
    assert (status, doc) == (
        200,
        {"MaxConcurrentTransforms": 3, "BatchStrategy": "SINGLE_RECORD", "MaxPayloadInMB": 100},
    )


def test_every_internal_limit_follows_the_payload_and_the_batch_timeout(batch):
    config = batch["config"]
    assert (config["max_request_bytes"], config["timeout"]) == (str(100 * MB), "3600")
    assert config["vmargs"] == f"-Xmx{512 + 1 * 2 * 100}m -XX:+UseContainerSupport"  # one worker
    props = du.run(["exec", batch["name"], "sh", "-c", "cat /tmp/byoc-serve-*/config.properties"], check=True).stdout
    settings = dict(line.split("=", 1) for line in props.splitlines() if "=" in line)
    assert settings["max_request_size"] == settings["max_response_size"] == str(101 * MB)
    assert settings["default_response_timeout"] == "3600"
    assert settings["vmargs"] == config["vmargs"]


@functools.lru_cache(maxsize=1)
def fifty_mb_of_json_lines() -> tuple[bytes, int]:
    """~50 MB of JSON Lines: noisy 180x180 PNGs (~97 KB each), 8 distinct ones repeated."""
    rng = random.Random(0)
    images = [png(Image.frombytes("RGB", (180, 180), rng.randbytes(180 * 180 * 3))) for _ in range(8)]
    count = 50 * MB // (len(base64.b64encode(images[0])) + 12)
    return jsonl([images[i % 8] for i in range(count)]), count


def test_a_50_mb_json_lines_request_is_answered_under_batch_transform(batch):
    body, count = fifty_mb_of_json_lines()
    start = time.monotonic()
    status, answer, headers = post(batch["port"], body, {"Content-Type": "application/jsonlines"})
    seconds = time.monotonic() - start
    print(f"{len(body) / MB:.1f} MB, {count} images: {status} in {seconds:.1f} s")
    assert status == 200 and headers["Content-Type"] == "application/jsonlines", answer[:300]
    lines = answer.split(b"\n")
    assert len(lines) == count and not answer.endswith(b"\n")
    docs = [json.loads(x) for x in lines]
    assert all(len(d["predictions"]) == 5 for d in docs)
    assert all(same(docs[i]["predictions"], docs[i % 8]["predictions"]) for i in range(count))


def test_a_50_mb_request_is_413_with_the_defaults(defaults):
    body, _ = fifty_mb_of_json_lines()
    status, doc = refused_before_the_body(defaults["port"], len(body), "application/jsonlines")
    assert (status, doc["status"]) == (413, 413) and f"over the limit of {6 * MB}" in doc["error"]
    assert request(defaults["port"], "/ping")[0] == 200


# ---- many images per request


def test_json_lines_are_answered_line_for_line_with_a_corrupt_line_in_the_middle(defaults):
    port = defaults["port"]
    images = held_out_images(defaults)
    good = jsonl([i for _, i in images[:6]])
    body = (
        good
        + b'{"b64": "not base64!"}\n'
        + b"{broken\n"
        + jsonl([b"\x89PNG but not an image"])
        + jsonl([i for _, i in images[6:]])
    )
    status, answer, headers = post(port, body, {"Content-Type": "application/jsonlines"})
    assert status == 200 and headers["Content-Type"] == "application/jsonlines"
    docs = [json.loads(x) for x in answer.split(b"\n")]
    assert len(docs) == len(images) + 3 and not answer.endswith(b"\n")
    errors = docs[6:9]
    assert [e["status"] for e in errors] == [400, 400, 400] and all(set(e) == {"error", "status"} for e in errors)
    assert "line 7: b64 is not valid base64" in errors[0]["error"] and "line 8: not valid JSON" in errors[1]["error"]
    predicted = docs[:6] + docs[9:]
    for (name, image), doc in zip(images, predicted, strict=True):
        assert same(doc["predictions"], single(port, image)), name


def archives(images: list[tuple[str, bytes]]) -> dict[str, bytes]:
    tar_buf = io.BytesIO()
    with tarfile.open(fileobj=tar_buf, mode="w") as archive:
        for name, data in images:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    zip_buf = io.BytesIO()
    with zipfile.ZipFile(zip_buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in images:
            archive.writestr(name, data)
    return {
        "application/x-tar": tar_buf.getvalue(),
        "application/gzip": gzip.compress(tar_buf.getvalue()),
        "application/zip": zip_buf.getvalue(),
    }


@pytest.mark.parametrize("content_type", ["application/x-tar", "application/gzip", "application/zip"])
def test_archives_are_answered_per_member_as_single_calls_are(defaults, content_type):
    port = defaults["port"]
    images = held_out_images(defaults)
    headers = {"Content-Type": content_type, "X-Amzn-SageMaker-Custom-Attributes": "top_k=3"}
    status, answer, resp_headers = post(port, archives(images)[content_type], headers)
    assert status == 200 and resp_headers["Content-Type"] == "application/json"
    doc = json.loads(answer)
    assert list(doc) == [name for name, _ in images]
    for name, image in images:
        assert same(doc[name]["predictions"], single(port, image)[:3]), name


# ---- archive bombs


def gzip_tar_bomb(members: int, member_bytes: int, declared: int | None = None) -> bytes:
    """A gzipped tar of `members` files of zeros (level 1: ~220:1), or one header declaring `declared`."""
    pack, out = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS), []
    zeros = bytes(MB)
    for i in range(members):
        info = tarfile.TarInfo(f"zeros-{i}.png")
        info.size = declared or member_bytes
        out.append(pack.compress(info.tobuf(format=tarfile.GNU_FORMAT)))
        out += [pack.compress(zeros) for _ in range(member_bytes // MB)]
    return b"".join(out) + pack.compress(bytes(1024)) + pack.flush()


def zip_bomb(members: int, member_bytes: int, declared: int | None = None) -> bytes:
    """A zip of `members` distinct files of zeros, all deflated alike (compressed once); each
    declares its true size, or `declared`."""
    pack = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    data = pack.compress(bytes(member_bytes)) + pack.flush()
    crc, size = zlib.crc32(bytes(member_bytes)), declared or member_bytes
    local, central = [], []
    offset = 0
    for i in range(members):
        name = b"zeros-%d.png" % i
        head = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 8, 0, 0, crc, len(data), size, len(name), 0) + name
        central.append(
            struct.pack(
                "<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 8, 0, 0, crc, len(data), size, len(name), 0, 0, 0, 0, 0, offset
            )
            + name
        )
        local.append(head + data)
        offset += len(head) + len(data)
    directory = b"".join(central)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, members, members, len(directory), offset, 0)
    return b"".join(local) + directory + end


BOMBS = {
    "gzip tar declaring 4 GiB": (lambda: gzip_tar_bomb(1, MB, declared=4 * 2**30), "application/gzip"),
    "gzip tar of 1 GiB of zeros": (lambda: gzip_tar_bomb(200, 5 * MB), "application/gzip"),
    "zip declaring 4 GiB": (lambda: zip_bomb(1, MB, declared=2**32 - 1), "application/zip"),
    "zip of 1 GiB of zeros": (lambda: zip_bomb(200, 5 * MB), "application/zip"),
}


@pytest.mark.parametrize("case", list(BOMBS))
def test_an_archive_bomb_is_413_with_the_containers_memory_flat(defaults, case):
    port = defaults["port"]
    make, content_type = BOMBS[case]
    body = make()
    assert len(body) < 6 * MB
    image = held_out_images(defaults, 1)[0][1]
    single(port, image)  # the first-call costs come first
    usage = du.memory_usage_file(defaults["id"])
    growth, (status, answer, _) = du.peak_growth(usage, lambda: post(port, body, {"Content-Type": content_type}))
    doc = json.loads(answer)
    print(f"{case} ({len(body)} bytes): {status} {doc['error'][:90]!r}; memory peak growth {growth / MB:.1f} MiB")
    assert (status, doc["status"]) == (413, 413)
    assert growth < MAX_BOMB_GROWTH, f"container memory grew by {growth / MB:.0f} MiB"
    assert request(port, "/ping")[0] == 200 and single(port, image)
