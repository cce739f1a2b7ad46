"""bench/: the load client, the report's ratios and targets, payloads, preprocessing pipelines,
and a small end-to-end run of `python -m bench`."""

from __future__ import annotations

import json
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench import containers, httpload, payloads, report, serving
from tests import netutil


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen = 0

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).seen += 1
        status = 500 if body == b"fail" else 200
        answer = json.dumps({"bytes": len(body)}).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))
    assert httpload.percentile(values, 50) == 50
    assert httpload.percentile(values, 99) == 99
    assert httpload.percentile([3.0], 99) == 3.0


def test_load_counts_answers_and_errors(http_server):
    ok = httpload.run("127.0.0.1", http_server, "/x", b"a" * 5000, "image/jpeg", concurrency=3, seconds=0.5, warmup=0.1)
    assert ok.requests > 10 and ok.errors == 0
    assert ok.p50_ms <= ok.p99_ms and ok.rps > 0
    bad = httpload.run("127.0.0.1", http_server, "/x", b"fail", "image/jpeg", concurrency=1, seconds=0.3, warmup=0.0)
    assert bad.requests == 0 and bad.errors > 0 and "HTTP 500" in bad.first_error


def test_load_reports_a_refused_connection():
    with netutil.closed_port() as port:  # bound, never listening: refuses, and nobody else can take it
        result = httpload.run("127.0.0.1", port, "/x", b"a", "image/jpeg", concurrency=1, seconds=0.2, warmup=0.0)
    assert result.requests == 0 and result.errors > 0


def test_free_ports_are_distinct():
    assert len({containers.free_port() for _ in range(5)}) == 5


def test_docker_stats_sizes_parse():
    assert containers.parse_size("1.5GiB") == 1.5 * 2**30
    assert containers.parse_size("512MiB") == 512 * 2**20
    assert containers.parse_size("100kB") == 100e3


def test_payloads_have_the_requested_megapixels(tmp_path):
    from PIL import Image

    paths = payloads.write(tmp_path, {"0.3MP": 0.3, "1MP": 1.0})
    for name, mp in (("0.3MP", 0.3), ("1MP", 1.0)):
        with Image.open(paths[name]) as img:
            assert img.format == "JPEG"
            assert abs(img.width * img.height / 1e6 - mp) < 0.01


def test_pipelines_agree_with_the_reference(tmp_path):
    """Every decode/preprocess variant gives the reference tensor's shape and nearly its values."""
    pytest.importorskip("torch")
    from bench.inprocess import Pipelines
    from byoc.core.preprocessing import Preprocessing

    data = payloads.write(tmp_path, {"0.3MP": 0.3})["0.3MP"].read_bytes()
    pipes = Pipelines(Preprocessing.for_size(64))
    ref = pipes.pil_full(data)
    assert ref.shape == (3, 64, 64)
    assert pipes.names == ["pil_full", "pil_draft", "pil_draft_resize", "tv_decode_jpeg"]  # torchvision here
    for name in pipes.names:
        x = getattr(pipes, name)(data)
        assert x.shape == ref.shape, name
        assert (x - ref).abs().mean() < 0.1, name  # reduced-DCT decoding differs a little
    # Resizing uint8 in Pillow before the float conversion gives torchvision's numbers (to one 8-bit level).
    assert (pipes.pil_draft_resize(data) - pipes.pil_draft(data)).abs().max() < 1.01 / 255 / min(pipes.pre.std)


def _results(byoc_c1=110.0, byoc_rps=(9.0, 18.0), ts_rps=(7.0, 12.0), limit_ms=100.0, limit_best=20.0):
    def load(c1, rates):
        return {
            "2MP": [
                {"concurrency": c, "p50_ms": c1 * c, "p99_ms": c1 * c * 1.5, "rps": r, "requests": 10, "errors": 0}
                for c, r in zip((1, 4), rates, strict=True)
            ]
        }

    limit = {
        "2MP": {
            "e2e_batch1_ms": {"2MP": {"pipeline": "pil_draft", "ms": limit_ms}},
            "best_batch": {"2MP": {"batch": 4, "images_per_s": limit_best}},
            "preprocess_ms": {"2MP": {"pil_full": 15.0, "pil_draft": 7.0}},
            "forward_ms": {"torchscript_optimized": 60.0},
            "torch": "2.x",
            "threads": 2,
        }
    }
    return {
        "serving": {
            "servers": [
                {
                    "label": "byoc",
                    "image": "i",
                    "load": load(byoc_c1, byoc_rps),
                    "cold_start_ping_s": 6.0,
                    "limit": limit,
                },
                {"label": "torchserve", "image": "t", "load": load(150.0, ts_rps), "cold_start_ping_s": 9.0},
            ],
        },
        "training": {
            "ratio": 0.8,
            "arch": "resnet18",
            "batch_size": 32,
            "train_images": 384,
            "valid_images": 32,
            "container_epoch_s": 50.0,
            "container_images_per_s": 7.7,
            "limit_epoch_s": 40.0,
            "limit_images_per_s": 9.6,
        },
        "sizes": [{"image": "byoc-serve:cpu", "what": "cpu", "gb": 1.2, "target_gb": 1.5}],
    }


def test_targets_compute_ratios_and_verdicts():
    rows = {r["target"]: r for r in report.targets(_results())}
    p50 = rows["byoc 2MP: p50 at c=1 / in-process batch-1 limit"]
    assert p50["value"] == 1.1 and p50["met"] is True
    sat = rows["byoc 2MP: saturated req/s / in-process best-batch limit"]
    assert sat["value"] == 0.9 and sat["met"] is True
    vs_ts = rows["byoc 2MP: saturated req/s / TorchServe's"]
    assert vs_ts["value"] == 1.5 and vs_ts["met"] is True
    assert rows["byoc: cold start, container start to /ping 200"]["met"] is True
    assert rows["training container images/s / in-process limit"]["met"] is False
    assert rows["image size byoc-serve:cpu (cpu)"]["met"] is True


def test_targets_report_misses_and_unmeasured():
    results = _results(byoc_c1=130.0, byoc_rps=(5.0, 8.0))
    results["serving"]["servers"][0]["load"]["2MP"][0]["requests"] = 0  # c=1 never answered
    rows = {r["target"]: r for r in report.targets(results)}
    assert rows["byoc 2MP: p50 at c=1 / in-process batch-1 limit"]["met"] is None
    assert rows["byoc 2MP: saturated req/s / TorchServe's"]["met"] is False
    text = report.markdown(results)
    assert "MISSED" in text and "not measured" in text and "| byoc | 2MP | 4 |" in text


@pytest.mark.container
def test_bench_cli_writes_results(tmp_path):
    """`python -m bench --only sizes` runs end to end: JSON, Markdown summary, exit 0."""
    from bench.__main__ import main
    from tests.dockerutil import require_docker

    require_docker()
    assert main(["--only", "sizes", "--out", str(tmp_path), "--work", str(tmp_path / "work")]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["failures"] == [] and results["sizes"]
    assert "size GB" in (tmp_path / "summary.md").read_text()


def test_merged_slices_pool_latencies_and_counts():
    a = httpload.LoadResult(
        1, 2.0, 3, 0, 10, 10, 10, 1.5, total_requests=3, cpu_ms_per_request=100.0, latencies_ms=[10.0, 11.0, 12.0]
    )
    b = httpload.LoadResult(
        1,
        2.0,
        2,
        1,
        30,
        30,
        30,
        1.0,
        first_error="HTTP 500",
        total_requests=2,
        cpu_ms_per_request=200.0,
        latencies_ms=[30.0, 40.0],
    )
    m = httpload.merge([a, b])
    assert (m.requests, m.errors, m.seconds, m.rps, m.p50_ms, m.p99_ms) == (5, 1, 4.0, 1.25, 12.0, 40.0)
    assert m.cpu_ms_per_request == 140.0 and m.first_error == "HTTP 500" and "latencies_ms" not in m.to_json()


def test_the_limit_around_sliced_load_points_is_combined():
    from bench.serving import combine

    e2e = {"pipeline": "pil_draft", "ms": 60.0, "cpu_ms": 110.0}
    before = {
        "e2e": e2e,
        "preprocess": {"pil_draft": 7.0},
        "handler_ms": 61.0,
        "best_batch": {"batch": 8, "images_per_s": 17.0, "by_batch": {1: 15.0, 8: 17.0}},
    }
    samples = [dict(e2e, ms=ms) for ms in (60.0, 80.0, 62.0, 61.0)]  # one slow minute between slices
    sliced = {
        "e2e": samples,
        "e2e_slices": [
            {"server_p50_ms": 66.0, "limit_before_ms": 60.0, "limit_after_ms": 80.0},
            {"server_p50_ms": 90.0, "limit_before_ms": 80.0, "limit_after_ms": 62.0},
            {"server_p50_ms": 65.0, "limit_before_ms": 62.0, "limit_after_ms": 61.0},
        ],
    }
    after = {"best_batch": {"batch": 8, "images_per_s": 19.0, "by_batch": {1: 14.0, 8: 19.0}}}
    lim = combine({"torch": "x"}, "2MP", before, sliced, after)
    got = lim["e2e_batch1_ms"]["2MP"]
    assert got["ms"] == 61.5 and got["ratio"] == round(65.0 / 61.5, 3)  # the median slice
    assert lim["best_batch"]["2MP"] == {**lim["best_batch"]["2MP"], "batch": 8, "images_per_s": 18.0}
    assert report.limit_of({"limit": {"2MP": lim}}, "2MP")[:2] == (61.5, 18.0)


def test_training_summary_takes_each_sides_fastest_counted_epoch():
    from bench import training

    rounds = [
        {"container": [30.0, 24.0, 26.0], "limit": [29.0, 22.0, 23.0]},
        {"container": [28.0, 31.0, 23.0], "limit": [25.0, 21.0, 27.0]},
    ]
    s = training.summarise(rounds, train_images=256)
    assert s["container_epoch_s"] == 23.0 and s["limit_epoch_s"] == 21.0  # first epochs (28, 25) not counted
    assert s["ratio"] == round(21.0 / 23.0, 3)
    assert s["ratio_median_of_rounds"] == round(statistics.median([22.5 / 25.0, 24.0 / 27.0]), 3)
    assert s["container_images_per_s"] == round(256 / 23.0, 2)
    text = report.training_text(
        {"training": {"arch": "resnet18", "batch_size": 32, "train_images": 256, "valid_images": 32, **s}}
    )
    assert "container [30.0, 24.0, 26.0], limit [29.0, 22.0, 23.0]" in text


def test_training_summary_needs_a_counted_epoch():
    from bench import training

    with pytest.raises(ValueError):
        training.summarise([{"container": [30.0], "limit": [29.0]}], train_images=256)


def test_plots_write_pngs_even_for_a_zero_change(tmp_path):
    from bench import plot

    results = _results()
    results["training"]["decode_top1"] = {"images": 10, "top1": {"pil_full": 0.9, "pil_draft": 0.9}}
    for fn, name in ((plot.serving, "serving.png"), (plot.ratios, "targets.png")):
        out = fn(results, tmp_path / name)
        assert out is not None and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = {r["target"]: r for r in report.targets(results)}
    zero = rows["top-1 change, pil_draft vs full decode (demo test set as JPEG)"]
    assert zero["value"] == 0 and plot.score(zero) == plot.CAP  # met by the widest margin, not an empty bar
    assert plot.score(rows["byoc 2MP: p50 at c=1 / in-process batch-1 limit"]) == 1.0
    assert plot.score(rows["training container images/s / in-process limit"]) == pytest.approx(0.8 / 0.85)  # missed


def test_cold_starts_interleave_kinds_and_report_medians_and_ratios(monkeypatch, tmp_path):
    """Real-time and serverless in turn first each round; medians per kind; serverless / real-time."""
    from bench import serving

    order = []
    times = {"real-time": iter([(5.0, 6.0), (7.0, 8.0), (6.0, 7.0)]), "serverless": iter([(9.0, 12.0)] * 3)}

    def fake(server, body, work, timeout=300):
        kind = "serverless" if server.resources else "real-time"
        order.append(kind)
        ping, first = next(times[kind])
        return {
            "ping_s": ping,
            "first_prediction_s": first,
            "container_mb": 900 if server.resources else 1800,
            "workers": 1 if server.resources else 2,
            "torch_threads": 1 if server.resources else 2,
            "max_request_bytes": (4 if server.resources else 6) * 2**20,
            "workers_from": "x",
        }

    monkeypatch.setattr(serving, "cold_start", fake)
    kinds = {
        "real-time": serving.byoc_server(tmp_path, image="byoc-serve:cpu", label="byoc-cpu"),
        "serverless": serving.byoc_server(
            tmp_path, image="byoc-serve:cpu", label="byoc-cpu-serverless", resources=("--memory", "2g", "--cpus", "1")
        ),
    }
    cold = serving.cold_starts(kinds, b"jpeg", tmp_path, rounds=3)
    assert order == ["real-time", "serverless", "serverless", "real-time", "real-time", "serverless"]
    rt, sl = cold["kinds"]["real-time"], cold["kinds"]["serverless"]
    assert (rt["ping_s"], rt["first_prediction_s"], rt["resources"]) == (6.0, 7.0, "none")
    assert (sl["ping_s"], sl["first_prediction_s"], sl["resources"]) == (9.0, 12.0, "--memory 2g --cpus 1")
    assert sl["ratio"] == {"ping_s": 1.5, "first_prediction_s": round(12 / 7, 3), "container_mb": 0.5}
    assert "ratio" not in rt and len(sl["samples"]) == 3
    text = report.markdown({"cold_start": cold})
    assert "| serverless | --memory 2g --cpus 1 | 1 x 1 | 4 | 9.00 | 12.0 | 900 | 3 |" in text
    assert "| serverless / real-time |  |  | - | 1.50 | 1.71 | 0.50 | 3 |" in text
    assert "| real-time | none | 2 x 2 | 6 | 6.00 | 7.00 | 1800 | 3 |" in text


def _precision(int8_c1=36.0, int8_rps=(27.0, 31.0), top1_int8=92.57, fp32_ping=3.0):
    """A precision section: TorchScript fp32 (the baseline), ONNX Runtime fp32 and INT8."""

    def server(label, image, runtime, c1, rates):
        return {
            "label": label,
            "image": image,
            "runtime": runtime,
            "load": {
                "2MP": [
                    {"concurrency": c, "p50_ms": c1 * c, "p99_ms": c1 * c * 1.5, "rps": r, "requests": 10, "errors": 0}
                    for c, r in zip((1, 4), rates, strict=True)
                ]
            },
            "memory": {"worker_pss_mb": [300, 310]},
        }

    kinds = {
        "torchscript-fp32": {"image": "byoc-serve:latest", "ping_s": 6.0},
        "onnx-fp32": {"image": "byoc-serve:cpu", "ping_s": fp32_ping},
        "onnx-int8": {"image": "byoc-serve:cpu", "ping_s": 2.0},
    }
    for k in kinds.values():
        k.update(resources="none", workers=2, torch_threads=2, max_request_bytes=6 * 2**20)
        k.update(first_prediction_s=k["ping_s"] + 1, container_mb=900)
    return {
        "precision": {
            "baseline": "torchscript-fp32",
            "judged": "onnx-int8",
            "payloads": ["2MP"],
            "sizing": {"SAGEMAKER_MODEL_SERVER_WORKERS": "2", "BYOC_TORCH_THREADS": "2"},
            "servers": [
                server("torchscript-fp32", "byoc-serve:latest", "torchscript", 60.0, (16.0, 20.0)),
                server("onnx-fp32", "byoc-serve:cpu", "onnxruntime-fp32", 64.0, (15.0, 19.0)),
                server("onnx-int8", "byoc-serve:cpu", "onnxruntime-int8", int8_c1, int8_rps),
            ],
            "cold_start": {"rounds": 3, "kinds": kinds},
            "top1": {
                "images": 270,
                "by_server": {"torchscript-fp32": 92.94, "onnx-fp32": 92.94, "onnx-int8": top1_int8},
            },
        },
        "sizes": [{"image": "byoc-serve:cpu", "what": "serving (CPU-only)", "gb": 0.55, "target_gb": 0.6}],
    }


def test_precision_targets_judge_int8_against_torchscript():
    rows = {r["target"]: r for r in report.targets(_precision())}
    p50 = rows["onnx-int8 2MP: p50 at c=1 / torchscript-fp32's"]
    assert (p50["value"], p50["met"]) == (0.6, True)
    sat = rows["onnx-int8 2MP: saturated req/s / torchscript-fp32's"]
    assert (sat["value"], sat["met"]) == (1.55, True)
    top1 = rows["onnx-int8: top-1 change vs torchscript-fp32 (demo test set, points)"]
    assert (top1["value"], top1["met"]) == (0.37, True)
    assert rows["onnx-fp32: top-1 change vs torchscript-fp32 (demo test set, points)"]["value"] == 0
    assert rows["onnx-int8: cold start to /ping 200 (median of 3)"]["met"] is True
    assert rows["onnx-fp32: cold start to /ping 200 (median of 3)"]["met"] is False  # 3.0 s > 2.5 s
    assert "torchscript-fp32: cold start to /ping 200 (median of 3)" not in rows  # the baseline is not judged
    assert rows["image size byoc-serve:cpu (serving (CPU-only))"]["goal"] == "<= 0.6 GB"


def test_precision_targets_report_misses_and_unmeasured():
    results = _precision(int8_c1=45.0, int8_rps=(20.0, 25.0), top1_int8=92.0)
    results["precision"]["servers"][0]["load"]["2MP"][0]["requests"] = 0  # the baseline's c=1 never answered
    del results["precision"]["cold_start"]
    rows = {r["target"]: r for r in report.targets(results)}
    assert rows["onnx-int8 2MP: p50 at c=1 / torchscript-fp32's"]["met"] is None
    assert rows["onnx-int8 2MP: saturated req/s / torchscript-fp32's"]["met"] is False  # 1.25 < 1.4
    assert rows["onnx-int8: top-1 change vs torchscript-fp32 (demo test set, points)"]["met"] is False  # 0.94
    assert rows["onnx-int8: cold start to /ping 200 (median of None)"]["met"] is None


def test_precision_table_puts_the_three_servers_side_by_side():
    text = report.markdown(_precision())
    assert (
        "| server (2 workers x 2 threads unless named) | image | runtime | payload | p50 c=1 ms | / torchscript-fp32 |"
        in text
    )
    assert (
        "| onnx-int8 | byoc-serve:cpu | onnxruntime-int8 | 2MP | 36.0 | 0.60 | 31.0 | 1.55 | 300, 310 | 2.00 "
        "| 3.00 | 92.57 | 0.55 |" in text
    )
    assert "| torchscript-fp32 | byoc-serve:latest | torchscript | 2MP | 60.0 | 1.00 | 20.0 | 1.00 |" in text
    assert "| onnx-int8 | 2MP | 4 | 144.0 | 216.0 | 31.0 |" in text  # every load point
    assert "| cold start, byoc-serve:latest, byoc-serve:cpu |" in text
    assert "| onnx-int8 / torchscript-fp32 |" not in text  # ratios come only from bench.serving.cold_starts


def test_limit_rows_only_for_servers_whose_limit_was_taken():
    results = _results()
    cpu = dict(results["serving"]["servers"][0], label="byoc-cpu", limit={})
    results["serving"]["servers"].append(cpu)
    rows = {r["target"] for r in report.targets(results)}
    assert "byoc 2MP: p50 at c=1 / in-process batch-1 limit" in rows
    assert "byoc-cpu 2MP: p50 at c=1 / in-process batch-1 limit" not in rows
    assert "byoc-cpu 2MP: saturated req/s / TorchServe's" in rows


def test_precision_servers_share_sizing_and_are_checked_for_their_runtime(tmp_path):
    from bench import precision

    servers = precision.servers(tmp_path)
    assert [s.image for s in servers.values()] == ["byoc-serve:latest", "byoc-serve:cpu", "byoc-serve:cpu"]
    assert all("SAGEMAKER_MODEL_SERVER_WORKERS=2 BYOC_TORCH_THREADS=2" in s.notes for s in servers.values())
    assert "BYOC_PRECISION" not in servers["torchscript-fp32"].notes
    assert "BYOC_PRECISION=fp32" in servers["onnx-fp32"].notes and "BYOC_PRECISION=int8" in servers["onnx-int8"].notes
    assert precision.check_runtime("onnx-int8", "onnxruntime-int8") == ""
    assert "ran torchscript, not onnxruntime-int8" in precision.check_runtime("onnx-int8", "torchscript")
    assert "unreported" in precision.check_runtime("onnx-fp32", None)
    variants = precision.servers(tmp_path, variants=True)
    assert list(variants) == [*servers, "onnx-int8-1w2t", "onnx-int8-2w1t", "onnx-int8-4w1t"]
    assert (
        "SAGEMAKER_MODEL_SERVER_WORKERS=4 BYOC_TORCH_THREADS=1 BYOC_PRECISION=int8" in variants["onnx-int8-4w1t"].notes
    )
    assert precision.check_runtime("onnx-int8-2w1t", "onnxruntime-int8") == ""


def test_precision_variants_are_shown_but_not_judged():
    results = _precision()
    variant = dict(results["precision"]["servers"][2], label="onnx-int8-1w2t")
    results["precision"]["servers"].append(variant)
    results["precision"]["variants"] = ["onnx-int8-1w2t"]
    assert not [r for r in report.targets(results) if "onnx-int8-1w2t" in r["target"]]
    assert "| onnx-int8-1w2t | byoc-serve:cpu | onnxruntime-int8 | 2MP | 36.0 |" in report.markdown(results)


def test_log_events_are_found_behind_the_model_servers_prefix(monkeypatch):
    import subprocess

    from bench import serving

    logs = (
        '{"event": "config", "workers": 2}\n'
        "2026-01-01T00:00:00,000 [INFO ] W-9000-model_1.0-stdout MODEL_LOG - "
        '{"event": "model_loaded", "runtime": "onnxruntime-int8"} trailing\n'
    )
    monkeypatch.setattr(serving.containers, "docker", lambda *a, **k: subprocess.CompletedProcess(a, 0, logs, ""))
    assert serving.log_event("c", "model_loaded") == {"event": "model_loaded", "runtime": "onnxruntime-int8"}
    assert serving.log_event("c", "config")["workers"] == 2
    assert serving.log_event("c", "absent") == {}


class _Classifier(BaseHTTPRequestHandler):
    """Answers as byoc-serve does, its top class the body's first byte."""

    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        answer = json.dumps({"predictions": [{"label": "x", "index": body[0], "score": 0.9}]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


def test_served_top1_scores_each_images_first_answer(tmp_path):
    from types import SimpleNamespace

    from bench import precision

    images = []
    for i, (answer, target) in enumerate([(0, 0), (1, 1), (2, 1), (3, 3)]):
        path = tmp_path / f"img_{i}.png"
        path.write_bytes(bytes([answer]))
        images.append(SimpleNamespace(path=path, target=target))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Classifier)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert precision.answered_top1(f"http://127.0.0.1:{server.server_address[1]}/invocations", images) == 75.0
    finally:
        server.shutdown()
        server.server_close()


def _peer(label: str, c1_ms: float, rates: tuple[float, float], sizing: str = "2x1", payload: str = "2MP") -> dict:
    """A peer's serving result as bench.serving writes it: c=1 and c=4 points, its sizing and sweep."""
    points = [
        {"concurrency": c, "p50_ms": c1_ms * c, "p99_ms": c1_ms * c * 2, "rps": r, "requests": 10, "errors": 0}
        for c, r in zip((1, 4), rates, strict=True)
    ]
    return {
        "label": label,
        "image": f"byoc-{label.removesuffix('-onnx')}:latest",
        "runtime": "onnx-int8" if label.endswith("-onnx") else "torchscript",
        "load": {payload: points},
        "sizing": sizing,
        "sweep": {"concurrency": 4, "points": {"2x1": {"rps": rates[1]}, "1x2": {"rps": rates[1] / 2}}, "best": "2x1"},
        "memory": {"worker_pss_mb": [300, 310]},
        "cold_start_ping_s": 20.0,
        "image_gb": 6.5,
    }


def _with_peers(*peers: dict) -> dict:
    results = _results()  # byoc: c=1 p50 110 ms, 18 req/s at c=4
    byoc_cpu = _peer("byoc-cpu", 40.0, (25.0, 50.0))
    byoc_cpu.update(sizing="", sweep={}, image="byoc-serve:cpu")
    results["serving"]["servers"] += [byoc_cpu, *peers]
    return results


def test_peer_ratios_pair_each_peer_with_byocs_image_of_the_same_model_file():
    results = _with_peers(_peer("rayserve", 100.0, (9.0, 12.0)), _peer("litserve-onnx", 50.0, (20.0, 40.0)))
    rows = {r["target"]: r for r in report.targets(results)}
    torch_rps = rows["byoc / rayserve 2MP: saturated req/s"]
    assert torch_rps["value"] == 1.5 and torch_rps["met"] is True  # 18 / 12
    torch_p50 = rows["byoc / rayserve 2MP: p50 at c=1"]
    assert torch_p50["value"] == 1.1 and torch_p50["met"] is False  # 110 / 100: byoc slower at c=1
    onnx_rps = rows["byoc-cpu / litserve-onnx 2MP: saturated req/s"]
    assert onnx_rps["value"] == 1.25 and onnx_rps["met"] is False  # 50 / 40: under 1.3
    assert rows["byoc-cpu / litserve-onnx 2MP: p50 at c=1"]["value"] == 0.8
    assert not any("byoc / litserve-onnx" in t or "byoc-cpu / rayserve " in t for t in rows)


def test_a_peer_without_its_byoc_server_or_without_answers_is_not_judged():
    results = _with_peers(_peer("litserve", 100.0, (9.0, 12.0)))
    results["serving"]["servers"] = [s for s in results["serving"]["servers"] if s["label"] != "byoc"]
    assert report.peer_targets(results) == [] and report.peer_table(results) == ""
    results = _with_peers(_peer("litserve", 100.0, (9.0, 12.0)))
    results["serving"]["servers"][-1]["load"]["2MP"][0]["requests"] = 0  # its c=1 point never answered
    rows = {r["target"]: r for r in report.peer_targets(results)}
    assert rows["byoc / litserve 2MP: p50 at c=1"]["met"] is None
    assert rows["byoc / litserve 2MP: saturated req/s"]["value"] == 1.5


def test_peer_table_puts_byocs_images_and_the_peers_side_by_side_with_their_sizing_and_sweep():
    results = _with_peers(
        _peer("rayserve", 100.0, (9.0, 12.0), sizing="1x2"), _peer("litserve-onnx", 50.0, (20.0, 40.0))
    )
    text = report.peer_table(results)
    lines = text.splitlines()
    byoc_row = next(line for line in lines if line.startswith("| byoc | "))
    ray_row = next(line for line in lines if line.startswith("| rayserve | "))
    assert "| 110.0 | 165.0 | 18.0 | - | - |" in byoc_row and "| default |" in byoc_row
    assert "| 100.0 | 200.0 | 12.0 | 1.50 | 1.10 |" in ray_row and "| 300, 310 | 1x2 | 6.50 |" in ray_row
    assert any(line.startswith("| byoc-cpu | ") for line in lines)
    sweep = report.sweep_table(results)
    assert "| rayserve | 2x1 | 4 | 12.0 | - | chosen |" in sweep and "| rayserve | 1x2 | 4 | 6.00 |" in sweep
    summary = report.markdown(results)
    assert "byoc's req/s / this" in summary and "MISSED" in summary


def test_without_peers_the_summary_has_no_peer_table():
    assert "byoc's req/s / this" not in report.markdown(_results())
    assert report.peer_table(_results()) == "" and report.sweep_table(_results()) == ""


def test_the_sweep_picks_the_sizing_with_the_most_requests_answered_without_errors():
    points = {"2x1": {"rps": 30.0, "errors": 0}, "1x2": {"rps": 35.0, "errors": 2}, "2x2": {"rps": 32.0, "errors": 0}}
    assert serving.best_sizing(points, "2x1") == "2x2"
    assert serving.best_sizing({"2x1": {"rps": None, "error": "no start"}}, "2x1") == "2x1"


def test_peer_servers_take_their_runtime_from_the_label_and_their_sizing_from_wxt(tmp_path):
    ray = serving.peer_server(tmp_path, "rayserve-onnx", "1x2")
    opts, args = ray.setup(tmp_path, 12345)
    env = dict(o.split("=", 1) for o in opts[1::2] if "=" in o and not o.startswith("/"))
    assert ray.image == "byoc-rayserve:latest" and args == [] and "--shm-size" in opts
    assert env["PEER_RUNTIME"] == "onnx-int8" and env["PEER_WORKERS"] == "1" and env["PEER_THREADS"] == "2"
    assert env["PEER_PORT"] == "12345" and f"{tmp_path}:/opt/ml/model:ro" in opts
    lit = serving.peer_server(tmp_path, "litserve", "2x1")
    assert (
        lit.image == "byoc-litserve:latest"
        and lit.runtime == "torchscript"
        and "--shm-size" not in lit.setup(tmp_path, 1)[0]
    )
    for bad in ("2", "x1", "0x2", "2xa"):
        with pytest.raises(ValueError, match="WORKERSxTHREADS"):
            serving.parse_sizing(bad)


def test_the_peers_workers_are_told_apart_from_their_servers_processes():
    assert containers.is_worker("ray::ServeRepli", "ray::ServeReplica:default:Classifier", "ray::ServeReplica")
    assert not containers.is_worker("ray::ServeContr", "ray::ServeController", "ray::ServeReplica")
    assert containers.is_worker("peer-worker", "/usr/bin/python3 -c from multiprocessing.spawn import", "peer-worker")
    assert not containers.is_worker("python3", "/usr/bin/python3 -c from multiprocessing.spawn import", "peer-worker")
    assert containers.is_worker("python3", "/usr/bin/python3.11 -m mms.model_service_worker", "model_service_worker")
    assert not containers.is_worker("java", "java -cp model_service_worker", "model_service_worker")


def test_bench_refuses_an_unknown_server_and_a_bad_peer_sizing(tmp_path, capsys):
    from bench.__main__ import parse_args

    args = parse_args(
        ["--servers", "byoc,rayserve-onnx", "--peer-sizing", "2x1,1x2", "--out", str(tmp_path), "--work", str(tmp_path)]
    )
    assert args.servers == ["byoc", "rayserve-onnx"] and args.peer_sizing == ["2x1", "1x2"]
    for argv in (["--servers", "byoc,tritonserver"], ["--peer-sizing", "two"]):
        with pytest.raises(SystemExit):
            parse_args([*argv, "--out", str(tmp_path), "--work", str(tmp_path)])
    err = capsys.readouterr().err
    assert "unknown server(s) tritonserver" in err and "--peer-sizing: 'two' is not WORKERSxTHREADS" in err


def test_peer_model_answers_as_byocs_handler_and_a_bad_body_alone_gets_400(tmp_path):
    """bench/peer_model.py, the model code inside both peer images: byoc's answers, in request order."""
    import io

    from PIL import Image

    from bench import peer_model
    from byoc.serve.config import ServeConfig
    from byoc.serve.handler import ImageClassifierHandler
    from tests.helpers.models import untrained_artifact

    model_dir = untrained_artifact(tmp_path / "model", ["a", "b", "c"], moved_batch_norm=True)
    bodies = []
    for seed in (20, 90):
        out = io.BytesIO()
        Image.effect_noise((40, 30), seed).convert("RGB").save(out, "JPEG")
        bodies.append(out.getvalue())
    runtime = peer_model.load(peer_model.Settings(model_dir=model_dir, threads=1))
    answers = peer_model.predict(runtime, [bodies[0], b"not an image", bodies[1]])
    handler = ImageClassifierHandler(ServeConfig(model_dir=model_dir, torch_threads=1))
    handler.load(model_dir, "cpu")
    for (status, body), sent in zip((answers[0], answers[2]), bodies, strict=True):
        ours = json.loads(handler.predict(sent, {"Content-Type": "image/jpeg"}))["predictions"]
        got = json.loads(body)["predictions"]
        assert status == 200 and [p["label"] for p in got] == [p["label"] for p in ours]
        assert [p["score"] for p in got] == pytest.approx([p["score"] for p in ours], abs=1e-5)
    assert answers[1][0] == 400 and "cannot decode the image" in json.loads(answers[1][1])["error"]


def test_peer_settings_come_from_the_environment_and_refuse_bad_values():
    from bench import peer_model

    s = peer_model.Settings.from_env({"PEER_RUNTIME": "onnx-int8", "PEER_WORKERS": "1", "PEER_THREADS": "2"})
    assert (s.runtime, s.workers, s.threads, s.max_batch) == ("onnx-int8", 1, 2, 4)
    with pytest.raises(ValueError, match="PEER_RUNTIME='tensorrt'"):
        peer_model.Settings.from_env({"PEER_RUNTIME": "tensorrt"})
    with pytest.raises(ValueError, match="PEER_WORKERS=0"):
        peer_model.Settings.from_env({"PEER_WORKERS": "0"})


def test_a_peer_runs_at_the_sizing_its_sweep_chose_and_records_both(monkeypatch, tmp_path):
    from bench import __main__ as bench_main

    swept, ran = [], []

    def sweep(make, sizings, body, concurrency, seconds, warmup, work):
        swept.append((sizings, concurrency, [make(s).notes for s in sizings]))
        return {"points": {s: {"rps": 1.0} for s in sizings}, "best": "1x2"}

    def run_server(server, *args, **kwargs):
        ran.append(server)
        return serving.ServerResult(server.label, server.image, server.notes)

    monkeypatch.setattr(serving, "sweep", sweep)
    monkeypatch.setattr(serving, "run_server", run_server)
    monkeypatch.setattr(containers, "image_size", lambda image: 6_414_000_000)
    (tmp_path / "2MP.jpg").write_bytes(b"jpeg")
    args = bench_main.parse_args(
        ["--peer-sizing", "2x1,1x2", "--concurrency", "1,8", "--out", str(tmp_path), "--work", str(tmp_path)]
    )
    result = bench_main.run_peer(args, tmp_path, "litserve-onnx", {"2MP": tmp_path / "2MP.jpg"}, tmp_path, [])
    [(sizings, concurrency, notes)] = swept
    assert sizings == ["2x1", "1x2"] and concurrency == 8 and "PEER_WORKERS=2 PEER_THREADS=1" in notes[0]
    assert "PEER_WORKERS=1 PEER_THREADS=2" in ran[0].notes and "PEER_RUNTIME=onnx-int8" in ran[0].notes
    assert result.sizing == "1x2" and result.sweep["best"] == "1x2" and result.image_gb == 6.41
    swept.clear()
    args.peer_sizing = ["2x2"]  # one sizing: no sweep
    assert bench_main.run_peer(args, tmp_path, "rayserve", {"2MP": tmp_path / "2MP.jpg"}, tmp_path, []).sizing == "2x2"
    assert swept == [] and "PEER_WORKERS=2 PEER_THREADS=2" in ran[-1].notes


def test_run_suites_records_how_long_each_chosen_suite_took(monkeypatch, tmp_path):
    import bench.__main__ as bench_main

    def slow_cold_starts(args, work):
        time.sleep(0.05)
        raise RuntimeError("no docker")  # a failed suite still has its duration

    monkeypatch.setattr(bench_main, "machine", lambda: {"summary": "test"})
    monkeypatch.setattr(bench_main, "run_cold_starts", slow_cold_starts)
    monkeypatch.setattr(bench_main.sizes, "run", lambda: [])
    args = bench_main.parse_args(["--only", "coldstart,sizes", "--work", str(tmp_path), "--out", str(tmp_path)])
    results = bench_main.run_suites(args, "test")
    assert set(results["suite_seconds"]) == {"coldstart", "sizes"}
    assert results["suite_seconds"]["coldstart"] >= 0.05 and results["failures"] == ["coldstart: no docker"]
    results |= {"seconds": 90.0, "suite_seconds": {"coldstart": 60.0, "sizes": 30.0}}
    assert report.durations(results) == "1.5 min (coldstart 1.0, sizes 0.5)"
    assert report.markdown(results).startswith("The run took 1.5 min (coldstart 1.0, sizes 0.5).")
