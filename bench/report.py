"""Figures, ratios and targets from a results document, as Markdown tables (printed and in the README)."""

from __future__ import annotations

import math

P50_VS_LIMIT = 1.10
THROUGHPUT_VS_LIMIT = 0.90
THROUGHPUT_VS_TORCHSERVE = 1.30
COLD_START_S = 10.0
TRAINING_VS_LIMIT = 0.85
TOP1_CHANGE = 0.005
JUDGED = ("byoc", "byoc-cpu")  # the images as shipped, with their default settings


def _num(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, float) and 0 < abs(x) < 0.1:
        return f"{x:.4f}"
    return f"{x:.2f}" if isinstance(x, float) and abs(x) < 10 else f"{x:.1f}" if isinstance(x, float) else str(x)


def table(header: list[str], rows: list[list]) -> str:
    """A Markdown table ('' without rows)."""
    if not rows:
        return ""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_num(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def point(server: dict, payload: str, concurrency: int) -> dict | None:
    for r in server.get("load", {}).get(payload, []):
        if r["concurrency"] == concurrency:
            return r
    return None


def saturated(server: dict, payload: str) -> float | None:
    """Throughput at saturation: the best req/s over the concurrencies run."""
    rates = [r["rps"] for r in server.get("load", {}).get(payload, []) if r["requests"]]
    return max(rates) if rates else None


def limit_of(server: dict, payload: str) -> tuple[float | None, float | None, dict]:
    """(batch-1 ms, best-batch images/s, the whole measurement) of the in-process limit taken in
    this server's container just before its load points for `payload`."""
    lim = (server.get("limit") or {}).get(payload) or {}
    e2e = lim.get("e2e_batch1_ms", {}).get(payload, {})
    best = lim.get("best_batch", {}).get(payload, {})
    return e2e.get("ms"), best.get("images_per_s"), lim


def ratio(a, b) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def _target(name: str, value, goal: float, higher_is_better: bool, unit: str = "") -> dict:
    met = None if value is None else (value >= goal if higher_is_better else value <= goal)
    return {"target": name, "value": value, "goal": f"{'>=' if higher_is_better else '<='} {goal}{unit}", "met": met}


def targets(results: dict) -> list[dict]:
    """Every target of the issue with its measured value; met is None when it was not measured."""
    out = []
    serving = results.get("serving", {})
    servers = {s["label"]: s for s in serving.get("servers", [])}
    ts = servers.get("torchserve")
    for label, ours in servers.items():
        if label not in JUDGED:  # variants (other worker/thread settings) are findings, not the product
            continue
        for payload in ours.get("load", {}):
            c1 = point(ours, payload, 1)
            lim1, best, _ = limit_of(ours, payload)
            sat = saturated(ours, payload)
            # The median over interleaved slices where the run has them (bench.serving.combine).
            sliced = limit_of(ours, payload)[2].get("e2e_batch1_ms", {}).get(payload, {}).get("ratio")
            out.append(
                _target(
                    f"{label} {payload}: p50 at c=1 / in-process batch-1 limit",
                    sliced
                    if sliced is not None and c1 and c1["requests"]
                    else ratio(c1["p50_ms"] if c1 and c1["requests"] else None, lim1),
                    P50_VS_LIMIT,
                    False,
                )
            )
            out.append(
                _target(
                    f"{label} {payload}: saturated req/s / in-process best-batch limit",
                    ratio(sat, best),
                    THROUGHPUT_VS_LIMIT,
                    True,
                )
            )
            if ts is not None:
                out.append(
                    _target(
                        f"{label} {payload}: saturated req/s / TorchServe's",
                        ratio(sat, saturated(ts, payload)),
                        THROUGHPUT_VS_TORCHSERVE,
                        True,
                    )
                )
        out.append(
            _target(
                f"{label}: cold start, container start to /ping 200",
                ours.get("cold_start_ping_s"),
                COLD_START_S,
                False,
                " s",
            )
        )
    training = results.get("training") or {}
    if training:
        out.append(
            _target("training container images/s / in-process limit", training.get("ratio"), TRAINING_VS_LIMIT, True)
        )
        top1 = (training.get("decode_top1") or {}).get("top1", {})
        for name, value in top1.items():
            if name != "pil_full" and "pil_full" in top1:
                out.append(
                    _target(
                        f"top-1 change, {name} vs full decode (demo test set as JPEG)",
                        round(abs(value - top1["pil_full"]), 4),
                        TOP1_CHANGE,
                        False,
                    )
                )
    for row in results.get("sizes", []):
        if row.get("target_gb") is not None:
            out.append(
                _target(f"image size {row['image']} ({row['what']})", row.get("gb"), row["target_gb"], False, " GB")
            )
    return out


def _limited(results: dict):
    """(server, payload, limit measurement) for every limit taken."""
    for s in results.get("serving", {}).get("servers", []):
        for payload in s.get("load", {}):
            lim = limit_of(s, payload)[2]
            if lim.get("e2e_batch1_ms"):
                yield s, payload, lim


def serving_table(results: dict) -> str:
    rows = []
    for s in results.get("serving", {}).get("servers", []):
        for payload, points in s.get("load", {}).items():
            for r in points:
                rows.append(
                    [
                        s["label"],
                        payload,
                        r["concurrency"],
                        r["p50_ms"],
                        r["p99_ms"],
                        r["rps"],
                        r.get("cpu_ms_per_request"),
                        r["errors"],
                    ]
                )
    for s, payload, lim in _limited(results):
        e2e, best = lim["e2e_batch1_ms"][payload], lim["best_batch"][payload]
        where = f"in-process limit in {s['label']} ({e2e['pipeline']})"
        rows.append([where, payload, "batch 1", e2e["ms"], None, round(1e3 / e2e["ms"], 2), e2e.get("cpu_ms"), None])
        rows.append([where, payload, f"batch {best['batch']}", None, None, best["images_per_s"], None, None])
        handler_ms = lim.get("handler_ms", {}).get(payload)
        if handler_ms:
            rows.append(
                [
                    f"byoc handler.predict in {s['label']}",
                    payload,
                    "batch 1",
                    handler_ms,
                    None,
                    round(1e3 / handler_ms, 2),
                    None,
                    None,
                ]
            )
    return table(["server", "payload", "concurrency", "p50 ms", "p99 ms", "req/s", "CPU ms/req", "errors"], rows)


def servers_table(results: dict) -> str:
    rows = []
    for s in results.get("serving", {}).get("servers", []):
        mem = s.get("memory") or {}
        rows.append(
            [
                s["label"],
                s["image"],
                s.get("cold_start_ping_s"),
                s.get("cold_start_first_prediction_s"),
                mem.get("container_mb"),
                mem.get("workers"),
                ", ".join(str(m) for m in mem.get("worker_pss_mb", [])),
                s.get("notes") or "",
                (s.get("error") or "")[:80],
            ]
        )
    return table(
        [
            "server",
            "image",
            "cold start to /ping 200 s",
            "to first prediction s",
            "container MiB",
            "workers",
            "MiB per worker (PSS)",
            "settings",
            "error",
        ],
        rows,
    )


def cold_start_table(results: dict) -> str:
    """The CPU image's cold start per kind of endpoint (medians of interleaved rounds), and each
    kind's ratio to the first (serverless / real-time)."""
    cold = results.get("cold_start") or {}
    rows = []
    for kind, k in (cold.get("kinds") or {}).items():
        sizing = f"{k.get('workers')} x {k.get('torch_threads')}"
        body_mb = round(k["max_request_bytes"] / 2**20) if k.get("max_request_bytes") else None
        rows.append(
            [kind, k["resources"], sizing, body_mb, k["ping_s"], k["first_prediction_s"], k["container_mb"], None]
        )
        ratio = k.get("ratio")
        if ratio:
            rows.append(
                [
                    f"{kind} / {next(iter(cold['kinds']))}",
                    "",
                    "",
                    None,
                    ratio["ping_s"],
                    ratio["first_prediction_s"],
                    ratio["container_mb"],
                    None,
                ]
            )
    for row in rows:
        row[-1] = cold.get("rounds")
    return table(
        [
            f"cold start, {next(iter(cold.get('kinds', {}).values()), {}).get('image', '')}",
            "docker run limits",
            "workers x threads",
            "body limit MB",
            "to /ping 200 s",
            "to first prediction s",
            "container MiB",
            "rounds (median)",
        ],
        rows,
    )


def preprocess_table(results: dict) -> str:
    limits = list(_limited(results))
    if not limits:
        return ""
    names = list(dict.fromkeys(n for _, p, lim in limits for n in lim["preprocess_ms"][p]))
    rows = [[s["label"], p, *[lim["preprocess_ms"][p].get(n) for n in names]] for s, p, lim in limits]
    forms = list(dict.fromkeys(f for _, _, lim in limits for f in lim.get("forward_ms", {})))
    # Measured once per limit process: one row per server.
    first = {s["label"]: lim for s, _, lim in reversed(limits)}
    fwd = [
        [label, lim.get("torch"), *[lim.get("forward_ms", {}).get(f) for f in forms]]
        for label, lim in reversed(first.items())
    ]
    threads = limits[0][2].get("threads")
    return (
        table(["server", "payload (decode + preprocess ms)", *names], rows)
        + f"\n\nForward pass alone, batch 1, {threads} threads (ms), in each server's container when its limit"
        " process starts:\n\n" + table(["server", "torch", *forms], fwd)
    )


def training_text(results: dict) -> str:
    t = results.get("training") or {}
    if not t:
        return ""
    rows = [
        ["container (224 px JPEG ImageFolder)", t["container_epoch_s"], t["container_images_per_s"]],
        ["in-process limit (synthetic tensors)", t["limit_epoch_s"], t["limit_images_per_s"]],
    ]
    text = table(
        [
            f"training {t['arch']} batch {t['batch_size']}, {t['train_images']} + {t['valid_images']} images",
            "fastest epoch s",
            "train images/s",
        ],
        rows,
    )
    if t.get("rounds"):
        text += (
            "\n\nEpoch seconds per interleaved round (the first epoch of each run is warm-up and not counted): "
            + "; ".join(f"container {r['container']}, limit {r['limit']}" for r in t["rounds"])
            + f". Median of the per-round ratios: {t.get('ratio_median_of_rounds')}"
        )
    demo = t.get("demo")
    if demo:
        text += (
            f"\n\nDemo dataset (handwritten digits, {demo['hyperparameters']}): "
            f"{demo['mean_epoch_s']} s per epoch on average ({demo['epoch_s']}), "
            f"test accuracy {demo['test_accuracy']:.3f}"
        )
    top1 = t.get("decode_top1")
    if top1:
        text += (
            f"\n\nTop-1 of that model on its {top1['images']} test images re-encoded as 256 px JPEG, per decode "
            "pipeline: " + ", ".join(f"{k} {v:.4f}" for k, v in top1["top1"].items())
        )
    return text


def sizes_table(results: dict) -> str:
    rows = [[r["image"], r["what"], r["gb"], r["target_gb"]] for r in results.get("sizes", [])]
    return table(["image", "what", "size GB", "target GB"], rows) if rows else ""


def targets_table(rows: list[dict]) -> str:
    mark = {True: "met", False: "MISSED", None: "not measured"}
    return table(
        ["target", "measured", "goal", ""], [[r["target"], r["value"], r["goal"], mark[r["met"]]] for r in rows]
    )


def markdown(results: dict) -> str:
    parts = [
        targets_table(targets(results)),
        serving_table(results),
        servers_table(results),
        cold_start_table(results),
        preprocess_table(results),
        training_text(results),
        sizes_table(results),
    ]
    return "\n\n".join(p for p in parts if p)
