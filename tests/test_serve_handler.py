"""The handler under multi-model-server's own Context (byoc.serve.handler): its answers, its
stages as seams a subclass overrides, its stage timings, and parity of its preprocessing with
training's eval transform."""

from __future__ import annotations

import io
import json
import logging

import numpy as np
import pytest
import torch
from mms.context import Context, RequestProcessor
from PIL import Image

from byoc.core import artifact
from byoc.core.preprocessing import eval_transform, open_image
from byoc.serve.config import ServeConfig
from byoc.serve.handler import ImageClassifierHandler, Request, StageMetrics

LABELS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.fixture(scope="module")
def handler(model_dir):
    h = ImageClassifierHandler(ServeConfig(model_dir=model_dir, max_image_pixels=1_000_000))
    h.initialize(Context("model", str(model_dir), None, 1, None, "1.1.11"))
    return h


def _png(size=(40, 30), color=(10, 200, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def _call(handler, body: bytes, **headers) -> tuple[int, str, dict]:
    ctx = Context("model", "unused", None, 1, None, "1.1.11")
    ctx.request_processor = [RequestProcessor({k.replace("_", "-"): v for k, v in headers.items()})]
    [answer] = handler.handle([{"body": bytearray(body)}], ctx)
    status, _ = ctx.get_response_status(0)
    return status, ctx.get_response_content_type(0), json.loads(answer)


def test_prediction(handler):
    status, ctype, doc = _call(handler, _png(), Content_Type="image/png")
    assert status == 200 and ctype == "application/json"
    preds = doc["predictions"]
    assert len(preds) == 5 and {p["label"] for p in preds} <= set(LABELS)
    assert [p["score"] for p in preds] == sorted((p["score"] for p in preds), reverse=True)
    assert all(LABELS[p["index"]] == p["label"] for p in preds)


def test_scores_are_the_softmax_of_the_model(handler, model_dir):
    _, _, doc = _call(
        handler, _png(), **{"Content-Type": "image/png", "X-Amzn-SageMaker-Custom-Attributes": "top_k=10"}
    )
    net, meta = artifact.load(model_dir)
    with torch.no_grad():
        probs = torch.softmax(net(eval_transform(meta.preprocessing)(open_image(_png(), 10**8))[None]), 1)[0]
    assert sum(p["score"] for p in doc["predictions"]) == pytest.approx(1.0, abs=1e-4)
    for p in doc["predictions"]:
        assert p["score"] == pytest.approx(probs[p["index"]].item(), abs=1e-5)


def test_serving_preprocessing_matches_training_evaluation(handler, tmp_path):
    """The handler's batch for a JPEG body equals what training's evaluation split loads from the same file."""
    from byoc.training.data import ImageFolderSplit, Sample

    pre = handler.meta.preprocessing
    rng = np.random.default_rng(1)
    path = tmp_path / "photo.jpg"
    Image.fromarray(rng.integers(0, 255, (700, 900, 3), dtype=np.uint8)).save(path, format="JPEG")
    served = handler.preprocess([Request(path.read_bytes(), {"content-type": "image/jpeg"})]).images[0]
    trained, _, bad = ImageFolderSplit([Sample(path, 0)], eval_transform(pre), pre.draft_size)[0]
    assert not bad and served.dtype == np.float32 and np.array_equal(served, trained.numpy())


def test_top_k_header_case_does_not_matter(handler):
    _, _, doc = _call(handler, _png(), **{"content-type": "image/png", "x-amzn-sagemaker-custom-attributes": "top_k=2"})
    assert len(doc["predictions"]) == 2


@pytest.mark.parametrize(
    "headers, body, status",
    [
        ({"Content-Type": "text/plain"}, b"hi", 415),
        ({"Content-Type": "image/png", "Accept": "text/csv"}, _png(), 406),
        ({"Content-Type": "image/png"}, b"garbage", 400),
        ({"Content-Type": "image/png"}, _png(size=(2000, 1000)), 400),  # over the 1 MP bound of this fixture
        ({"Content-Type": "application/json"}, b"{", 400),
    ],
)
def test_errors_are_json_with_status(handler, headers, body, status):
    got, ctype, doc = _call(handler, body, **headers)
    assert got == status and ctype == "application/json"
    assert doc["status"] == status and "Traceback" not in doc["error"]
    assert _call(handler, _png(), Content_Type="image/png")[0] == 200  # still serving


def test_unexpected_failure_is_500_without_internals(handler, monkeypatch):
    def boom(batch):
        raise RuntimeError("CUDA exploded at secret/path.py")

    monkeypatch.setattr(handler, "inference", boom)
    status, _, doc = _call(handler, _png(), Content_Type="image/png")
    assert status == 500 and "secret" not in doc["error"] and doc["status"] == 500


def test_probe_answers_without_a_body(handler):
    status, _, doc = _call(handler, b"", X_Byoc_Probe="1")
    assert status == 200 and doc == {"status": "ready"}


def _call_many(handler, requests: list[tuple[bytes, dict]]) -> list[tuple[int, dict]]:
    """Several requests in one handle() call, as multi-model-server sends them with batch_size > 1."""
    ctx = Context("model", "unused", None, len(requests), None, "1.1.11")
    ctx.request_processor = [RequestProcessor(headers) for _, headers in requests]
    answers = handler.handle([{"body": bytearray(body)} for body, _ in requests], ctx)
    assert len(answers) == len(requests)
    out = []
    for idx, answer in enumerate(answers):
        assert ctx.get_response_content_type(idx) == "application/json"
        out.append((ctx.get_response_status(idx)[0], json.loads(answer)))
    return out


def _npy(n: int) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.random.default_rng(n).integers(0, 255, (n, 36, 48, 3), dtype=np.uint8))
    return buf.getvalue()


def _instances(*images: bytes) -> bytes:
    import base64

    return json.dumps({"instances": [{"b64": base64.b64encode(i).decode()} for i in images]}).encode()


def test_one_call_answers_each_request_on_its_own(handler, monkeypatch):
    png = {"Content-Type": "image/png"}
    requests = [
        (_png(color=(200, 10, 10)), {**png, "X-Amzn-SageMaker-Custom-Attributes": "top_k=1"}),
        (b"garbage", png),
        (
            _instances(_png(), _png(color=(0, 0, 250))),
            {"Content-Type": "application/json", "X-Amzn-SageMaker-Custom-Attributes": "top_k=3"},
        ),
        (b"", {"X-Byoc-Probe": "1"}),
        (_png(), {**png, "Accept": "text/csv"}),
        (_npy(3), {"Content-Type": "application/x-npy"}),
        (_png(color=(5, 5, 5)), png),
    ]
    forwards = []
    inference = handler.inference
    monkeypatch.setattr(handler, "inference", lambda batch: forwards.append(len(batch)) or inference(batch))
    got = _call_many(handler, requests)
    # Every decoded image in one forward pass, the 406's too: Accept shapes the answer (postprocess).
    assert forwards == [1 + 2 + 1 + 3 + 1]
    assert [status for status, _ in got] == [200, 400, 200, 200, 406, 200, 200]
    assert len(got[0][1]["predictions"]) == 1
    assert got[1][1]["status"] == 400 and got[4][1]["status"] == 406
    assert [len(p) for p in got[2][1]["predictions"]] == [3, 3]
    assert got[3][1] == {"status": "ready"}
    assert [len(p) for p in got[5][1]["predictions"]] == [5, 5, 5]
    assert len(got[6][1]["predictions"]) == 5
    # Each request's answer is what it gets alone (up to float noise between batch shapes).
    for idx in (0, 2, 5, 6):
        [(status, alone)] = _call_many(handler, [requests[idx]])
        together = np.array(got[idx][1]["predictions"], dtype=object).ravel()
        alone = np.array(alone["predictions"], dtype=object).ravel()
        assert [p["index"] for p in together] == [p["index"] for p in alone]
        assert [p["score"] for p in together] == pytest.approx([p["score"] for p in alone], abs=1e-5)


def test_a_failed_batch_runs_its_requests_one_by_one(handler, monkeypatch):
    inference = handler.inference

    def fails_on_blue_or_batches(batch):
        if len(batch) > 1 or batch[0, 2].mean() > batch[0, 0].mean():
            raise RuntimeError("out of memory at secret/path.py")
        return inference(batch)

    monkeypatch.setattr(handler, "inference", fails_on_blue_or_batches)
    got = _call_many(
        handler,
        [
            (_png(color=(250, 0, 0)), {"Content-Type": "image/png"}),
            (_png(color=(0, 0, 250)), {"Content-Type": "image/png"}),
        ],
    )
    assert got[0][0] == 200 and len(got[0][1]["predictions"]) == 5
    assert got[1][0] == 500 and "secret" not in got[1][1]["error"]


def test_a_call_with_only_bad_requests_runs_no_forward(handler, monkeypatch):
    monkeypatch.setattr(handler, "inference", lambda batch: pytest.fail("no forward pass expected"))
    got = _call_many(handler, [(b"x", {"Content-Type": "text/plain"}), (b"", {"X-Byoc-Probe": "1"})])
    assert [status for status, _ in got] == [415, 200]


def test_a_framed_batch_from_the_front_answers_each_part(handler, monkeypatch):
    """The front's batch (byoc.serve.batching) is one model-server request; each part keeps its own
    headers and gets its own status, and the valid ones share one forward pass."""
    from byoc.serve import batching

    parts = [
        ({"Content-Type": "image/png", "X-Amzn-SageMaker-Custom-Attributes": "top_k=2"}, _png()),
        ({"Content-Type": "text/plain"}, b"hello"),
        ({"Content-Type": "image/png"}, b"not a png"),
        ({"Content-Type": "application/x-npy"}, _npy(2)),
    ]
    forwards = []
    inference = handler.inference
    monkeypatch.setattr(handler, "inference", lambda batch: forwards.append(len(batch)) or inference(batch))
    ctx = Context("model", "unused", None, 1, None, "1.1.11")
    ctx.request_processor = [RequestProcessor({"X-Byoc-Batch": str(len(parts))})]
    [answer] = handler.handle([{"body": bytearray(batching.pack_requests(parts))}], ctx)
    assert ctx.get_response_status(0)[0] == 200
    assert ctx.get_response_content_type(0) == batching.FRAMED_CONTENT_TYPE
    got = [(status, json.loads(body)) for status, body in batching.unpack_answers(answer, len(parts))]
    assert forwards == [1 + 2]
    assert [status for status, _ in got] == [200, 415, 400, 200]
    assert len(got[0][1]["predictions"]) == 2
    assert got[1][1]["status"] == 415 and "image/jpeg" in got[1][1]["error"]
    assert [len(p) for p in got[3][1]["predictions"]] == [5, 5]
    [(_, alone)] = _call_many(handler, [(parts[0][1], parts[0][0])])
    assert [p["index"] for p in got[0][1]["predictions"]] == [p["index"] for p in alone["predictions"]]


@pytest.mark.parametrize("count, body", [("2", b"\x00\x00"), ("x", b""), ("0", b"")])
def test_a_malformed_framed_batch_is_400(handler, count, body):
    status, _, doc = _call(handler, body, X_Byoc_Batch=count)
    assert status == 400 and doc["status"] == 400 and "malformed batch" in doc["error"]


# -- each stage is a seam: overriding one changes the answer ------------------------------------
def _loaded(cls, model_dir, **config):
    h = cls(ServeConfig(model_dir=model_dir, max_image_pixels=1_000_000, **config))
    h.load(model_dir, "cpu")
    return h


TOP_10 = {"Content-Type": "image/png", "X-Amzn-SageMaker-Custom-Attributes": "top_k=10"}


def test_overriding_preprocess_changes_the_predictions(handler, model_dir):
    class Blank(ImageClassifierHandler):
        def preprocess(self, requests):
            batch = super().preprocess(requests)
            batch.images = np.zeros_like(batch.images)
            return batch

    _, _, doc = _call(_loaded(Blank, model_dir), _png(), **TOP_10)
    blank = handler.inference(np.zeros((1, 3, 32, 32), dtype=np.float32))[0]
    assert [p["score"] for p in doc["predictions"]] == pytest.approx(
        [blank[p["index"]].item() for p in doc["predictions"]], abs=1e-5
    )
    _, _, plain = _call(handler, _png(), **TOP_10)
    assert [p["score"] for p in plain["predictions"]] != [p["score"] for p in doc["predictions"]]


def test_overriding_inference_changes_the_scores(model_dir):
    class AlwaysSeven(ImageClassifierHandler):
        def inference(self, images):
            return np.eye(len(LABELS), dtype=np.float32)[[7] * len(images)]

    status, _, doc = _call(
        _loaded(AlwaysSeven, model_dir), _instances(_png(), _png(color=(0, 0, 250))), Content_Type="application/json"
    )
    assert status == 200
    assert [p[0] for p in doc["predictions"]] == [{"label": "seven", "index": 7, "score": 1.0}] * 2


def test_overriding_postprocess_changes_the_body(handler, model_dir):
    class Wrapped(ImageClassifierHandler):
        def postprocess(self, probs, batch):
            return [
                (status, json.dumps({"wrapped": json.loads(body)}).encode())
                for status, body in super().postprocess(probs, batch)
            ]

    wrapped = _loaded(Wrapped, model_dir)
    assert _call(wrapped, _png(), Content_Type="image/png")[2] == {
        "wrapped": _call(handler, _png(), Content_Type="image/png")[2]
    }
    status, _, doc = _call(wrapped, b"hi", Content_Type="text/plain")  # errors pass through postprocess too
    assert status == 415 and doc["wrapped"]["status"] == 415


def test_predict_raises_the_answers_error(handler):
    from byoc.serve.http_errors import RequestError

    assert json.loads(handler.predict(_png(), {"content-type": "image/png"}))["predictions"]
    with pytest.raises(RequestError) as err:
        handler.predict(b"hi", {"Content-Type": "text/plain"})
    assert err.value.status == 415 and "image/jpeg" in err.value.message


# -- stage timings ------------------------------------------------------------------------------
def _events(caplog, event: str) -> list[dict]:
    docs = []
    for record in caplog.records:
        try:
            doc = json.loads(record.getMessage())
        except ValueError:
            continue
        if isinstance(doc, dict) and doc.get("event") == event:
            docs.append(doc)
    return docs


def test_start_up_and_each_call_log_stage_timings(model_dir, caplog):
    """With BYOC_METRICS_INTERVAL_S=0 every call writes its metrics line; the start-up line carries
    the warm-up's stage times."""
    h = ImageClassifierHandler(ServeConfig(model_dir=model_dir, metrics_interval_s=0))
    with caplog.at_level(logging.INFO, logger="byoc.serve.handler"):
        h.initialize(Context("model", str(model_dir), None, 1, None, "1.1.11"))
        _call_many(
            h,
            [
                (_png(), {"Content-Type": "image/png"}),
                (b"x", {"Content-Type": "text/plain"}),
                (_npy(2), {"Content-Type": "application/x-npy"}),
            ],
        )
    [loaded] = _events(caplog, "model_loaded")
    assert loaded["arch"] == "resnet18" and set(loaded["warmup_ms"]) == {"preprocess", "inference", "postprocess"}
    assert (loaded["runtime"], loaded["device"]) == ("torchscript", "cpu") and loaded["threads"] >= 1
    [metrics] = _events(caplog, "metrics")
    assert metrics["calls"] == 1 and metrics["requests"] == 3 and metrics["images"] == 3
    for stage in ("preprocess", "inference", "postprocess"):
        assert metrics[f"{stage}_ms"] >= 0 and metrics[f"{stage}_p50_ms"] >= 0
    assert metrics["inference_ms"] > 0


def test_metrics_are_written_at_most_once_per_interval_in_bounded_memory(caplog):
    now = [0.0]
    metrics = StageMetrics(10, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="byoc.serve.handler"):
        metrics.record(2, 3, {"preprocess": 4.0, "inference": 8.0, "postprocess": 2.0})
        now[0] = 9.0
        metrics.record(1, 1, {"preprocess": 1.0, "inference": 4.0, "postprocess": 1.0})
        assert _events(caplog, "metrics") == []
        now[0] = 10.0
        metrics.record(1, 1, {"preprocess": 1.0, "inference": 4.0, "postprocess": 1.0})
    [line] = _events(caplog, "metrics")
    assert (line["calls"], line["requests"], line["images"], line["seconds"]) == (3, 4, 5, 10.0)
    assert line["preprocess_ms"] == 6.0 / 4 and line["inference_ms"] == 16.0 / 4
    assert line["inference_p50_ms"] == 4.0  # the calls' per-request times: 4, 4, 4
    for _ in range(StageMetrics.SAMPLES + 10):
        metrics.record(1, 1, {"preprocess": 1.0, "inference": 1.0, "postprocess": 1.0})
    assert len(metrics.recent["inference"]) == StageMetrics.SAMPLES
