"""Figures, ratios and targets from a results document, as Markdown tables (printed, in summary.md, and in the
documentation's performance guide, docs/hooks/reference.py)."""

from __future__ import annotations

import math

P50_VS_LIMIT = 1.10
THROUGHPUT_VS_LIMIT = 0.90
THROUGHPUT_VS_TORCHSERVE = 1.30
COLD_START_S = 10.0
TRAINING_VS_LIMIT = 0.85
TOP1_CHANGE = 0.005
# byoc-serve:cpu's INT8 copy (ONNX Runtime) against byoc-serve:latest's TorchScript fp32.
P50_VS_TORCHSCRIPT = 0.65
THROUGHPUT_VS_TORCHSCRIPT = 1.4
TOP1_POINTS = 0.5
CPU_COLD_START_S = 2.5
JUDGED = ("byoc", "byoc-cpu")  # the images as shipped, with their default settings
# byoc against the peer servers (bench.serving.PEERS) on the same model file: its saturated req/s over
# the peer's, and its p50 at one connection over the peer's.
THROUGHPUT_VS_PEER = 1.30
P50_VS_PEER = 1.0


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


def limit_targets(label: str, ours: dict, payload: str) -> list[dict]:
    """A judged server's load against the in-process limit taken in its container."""
    c1 = _answered(point(ours, payload, 1))
    lim1, best, lim = limit_of(ours, payload)
    # The median over interleaved slices where the run has them (bench.serving.combine).
    sliced = lim.get("e2e_batch1_ms", {}).get(payload, {}).get("ratio")
    p50 = sliced if sliced is not None and c1 else ratio(c1 and c1["p50_ms"], lim1)
    return [
        _target(f"{label} {payload}: p50 at c=1 / in-process batch-1 limit", p50, P50_VS_LIMIT, False),
        _target(
            f"{label} {payload}: saturated req/s / in-process best-batch limit",
            ratio(saturated(ours, payload), best),
            THROUGHPUT_VS_LIMIT,
            True,
        ),
    ]


def targets(results: dict) -> list[dict]:
    """Every target with its measured value; met is None when it was not measured."""
    return (
        serving_targets(results)
        + peer_targets(results)
        + training_targets(results)
        + precision_targets(results)
        + size_targets(results)
    )


def serving_targets(results: dict) -> list[dict]:
    out = []
    servers = {s["label"]: s for s in results.get("serving", {}).get("servers", [])}
    ts = servers.get("torchserve")
    for label, ours in servers.items():
        if label not in JUDGED:  # variants (other worker/thread settings) are findings, not the product
            continue
        for payload in ours.get("load", {}):
            if ours.get("limit"):  # not taken with --no-inprocess, nor in an image without torch
                out += limit_targets(label, ours, payload)
            if ts is not None:
                out.append(
                    _target(
                        f"{label} {payload}: saturated req/s / TorchServe's",
                        ratio(saturated(ours, payload), saturated(ts, payload)),
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
    return out


def peer_pairs(results: dict) -> list[tuple[dict, dict]]:
    """(peer, the byoc server it is compared with) for every peer in the serving run: a TorchScript peer
    beside byoc (byoc-serve:latest), an ONNX one (label ending -onnx) beside byoc-cpu (byoc-serve:cpu).
    A peer whose byoc server did not run is left out."""
    servers = {s["label"]: s for s in results.get("serving", {}).get("servers", [])}
    pairs = []
    for label, s in servers.items():
        if not s.get("sizing"):  # only the peers record the sizing they ran with
            continue
        ours = servers.get("byoc-cpu" if label.endswith("-onnx") else "byoc")
        if ours is not None:
            pairs.append((s, ours))
    return pairs


def peer_ratios(peer: dict, ours: dict, payload: str) -> tuple[float | None, float | None]:
    """(byoc's saturated req/s / the peer's, byoc's p50 at c=1 / the peer's) on `payload`."""
    c1, c1_peer = _answered(point(ours, payload, 1)), _answered(point(peer, payload, 1))
    return (
        ratio(saturated(ours, payload), saturated(peer, payload)),
        ratio(c1 and c1["p50_ms"], c1_peer and c1_peer["p50_ms"]),
    )


def peer_targets(results: dict) -> list[dict]:
    """byoc against each peer on every payload both ran: throughput (>= THROUGHPUT_VS_PEER) and p50 at
    c=1 (<= P50_VS_PEER); None (not measured) where either side has no answered load point."""
    out = []
    for peer, ours in peer_pairs(results):
        for payload in peer.get("load", {}):
            rps, p50 = peer_ratios(peer, ours, payload)
            who = f"{ours['label']} / {peer['label']} {payload}"
            out.append(_target(f"{who}: saturated req/s", rps, THROUGHPUT_VS_PEER, True))
            out.append(_target(f"{who}: p50 at c=1", p50, P50_VS_PEER, False))
    return out


def training_targets(results: dict) -> list[dict]:
    training = results.get("training") or {}
    if not training:
        return []
    out = [_target("training container images/s / in-process limit", training.get("ratio"), TRAINING_VS_LIMIT, True)]
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
    return out


def precision_targets(results: dict) -> list[dict]:
    """byoc-serve:cpu (ONNX Runtime) against byoc-serve:latest's TorchScript fp32, in the same run:
    the judged copy's (INT8) speed; each ONNX copy's top-1 and cold start."""
    prec = results.get("precision") or {}
    if not prec:
        return []
    base_label, judged = prec["baseline"], prec["judged"]
    servers = {s["label"]: s for s in prec.get("servers", [])}
    base, ours = servers.get(base_label, {}), servers.get(judged, {})
    out = []
    for payload in prec.get("payloads", []):
        c1, c1_base = _answered(point(ours, payload, 1)), _answered(point(base, payload, 1))
        out.append(
            _target(
                f"{judged} {payload}: p50 at c=1 / {base_label}'s",
                ratio(c1 and c1["p50_ms"], c1_base and c1_base["p50_ms"]),
                P50_VS_TORCHSCRIPT,
                False,
            )
        )
        out.append(
            _target(
                f"{judged} {payload}: saturated req/s / {base_label}'s",
                ratio(saturated(ours, payload), saturated(base, payload)),
                THROUGHPUT_VS_TORCHSCRIPT,
                True,
            )
        )
    top1 = (prec.get("top1") or {}).get("by_server", {})
    cold = (prec.get("cold_start") or {}).get("kinds", {})
    for label in (s for s in servers if s != base_label and s not in prec.get("variants", [])):
        change = abs(top1[label] - top1[base_label]) if label in top1 and base_label in top1 else None
        out.append(
            _target(
                f"{label}: top-1 change vs {base_label} (demo test set, points)",
                None if change is None else round(change, 2),
                TOP1_POINTS,
                False,
            )
        )
        out.append(
            _target(
                f"{label}: cold start to /ping 200 (median of {(prec.get('cold_start') or {}).get('rounds')})",
                cold.get(label, {}).get("ping_s"),
                CPU_COLD_START_S,
                False,
                " s",
            )
        )
    return out


def _answered(load_point: dict | None) -> dict | None:
    return load_point if load_point and load_point["requests"] else None


def size_targets(results: dict) -> list[dict]:
    return [
        _target(f"image size {row['image']} ({row['what']})", row.get("gb"), row["target_gb"], False, " GB")
        for row in results.get("sizes", [])
        if row.get("target_gb") is not None
    ]


def _limited(results: dict, section: str = "serving"):
    """(server, payload, limit measurement) for every limit taken in `section`."""
    for s in results.get(section, {}).get("servers", []):
        for payload in s.get("load", {}):
            lim = limit_of(s, payload)[2]
            if lim.get("e2e_batch1_ms"):
                yield s, payload, lim


def serving_table(results: dict, section: str = "serving") -> str:
    """Every load point of `section`'s servers, and the in-process limits taken in their containers."""
    rows = []
    for s in results.get(section, {}).get("servers", []):
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
    for s, payload, lim in _limited(results, section):
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
                s.get("runtime") or "",
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
            "runtime",
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


def cold_start_table(cold: dict | None) -> str:
    """Cold starts per kind (of endpoint: real-time and serverless; or of server), medians of
    interleaved rounds (bench.serving.cold_starts), and each kind's ratio to the first."""
    cold = cold or {}
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
            ", ".join(["cold start", *dict.fromkeys(k["image"] for k in cold.get("kinds", {}).values())]),
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


def peer_table(results: dict) -> str:
    """byoc's two images and the peers side by side, per payload: p50 and p99 at c=1, saturated req/s, the
    ratios to byoc's image of the same model file, cold start, MiB per worker, workers x threads and the
    image's size ('' when no peer ran)."""
    pairs = peer_pairs(results)
    ours = list({id(o): o for _, o in pairs}.values())
    rows = []
    for payload in dict.fromkeys(p for s, _ in pairs for p in s.get("load", {})):
        for s, base in [(o, None) for o in ours] + pairs:
            c1 = _answered(point(s, payload, 1))
            rps, p50 = peer_ratios(s, base, payload) if base else (None, None)
            rows.append(
                [
                    s["label"],
                    s["image"],
                    s.get("runtime") or "",
                    payload,
                    c1 and c1["p50_ms"],
                    c1 and c1["p99_ms"],
                    saturated(s, payload),
                    rps,
                    p50,
                    s.get("cold_start_ping_s"),
                    s.get("cold_start_first_prediction_s"),
                    ", ".join(str(m) for m in (s.get("memory") or {}).get("worker_pss_mb", [])),
                    s.get("sizing") or "default",
                    s.get("image_gb"),
                ]
            )
    return table(
        [
            "server",
            "image",
            "runtime",
            "payload",
            "p50 c=1 ms",
            "p99 c=1 ms",
            "saturated req/s",
            f"byoc's req/s / this (>= {THROUGHPUT_VS_PEER})",
            f"byoc's p50 / this (<= {P50_VS_PEER})",
            "to /ping 200 s",
            "to first prediction s",
            "MiB per worker (PSS)",
            "workers x threads",
            "image GB",
        ],
        rows,
    )


def sweep_table(results: dict) -> str:
    """Each peer's sizing sweep: req/s and p50 of its short load point per workers x threads, the chosen one marked."""
    rows = []
    for s in results.get("serving", {}).get("servers", []):
        sweep = s.get("sweep") or {}
        for sizing, p in (sweep.get("points") or {}).items():
            chosen = "chosen" if sizing == sweep.get("best") else (p.get("error") or "")[:80]
            rows.append([s["label"], sizing, sweep.get("concurrency"), p.get("rps"), p.get("p50_ms"), chosen])
    return table(["peer", "workers x threads", "concurrency", "req/s", "p50 ms", ""], rows)


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


def precision_table(results: dict) -> str:
    """The precision benchmark side by side: per server and payload, p50 at c=1 and saturated req/s
    (each also over the baseline's), memory per worker, median cold start, top-1 and image size."""
    prec = results.get("precision") or {}
    if not prec.get("servers"):
        return ""
    servers = {s["label"]: s for s in prec["servers"]}
    base = servers.get(prec["baseline"], {})
    cold = (prec.get("cold_start") or {}).get("kinds", {})
    top1 = (prec.get("top1") or {}).get("by_server", {})
    gb = {r["image"]: r.get("gb") for r in results.get("sizes", [])}
    rows = []
    for payload in prec.get("payloads", []):
        for label, s in servers.items():
            c1, c1_base = _answered(point(s, payload, 1)), _answered(point(base, payload, 1))
            p50, p50_base = c1 and c1["p50_ms"], c1_base and c1_base["p50_ms"]
            sat = saturated(s, payload)
            rows.append(
                [
                    label,
                    s["image"],
                    s.get("runtime") or "",
                    payload,
                    p50,
                    ratio(p50, p50_base),
                    sat,
                    ratio(sat, saturated(base, payload)),
                    ", ".join(str(m) for m in (s.get("memory") or {}).get("worker_pss_mb", [])),
                    cold.get(label, {}).get("ping_s"),
                    cold.get(label, {}).get("first_prediction_s"),
                    None if label not in top1 else f"{top1[label]:.2f}",  # tenths of a point matter here
                    gb.get(s["image"]),
                ]
            )
    base_label = prec["baseline"]
    return table(
        [
            "server ({} workers x {} threads unless named)".format(*prec["sizing"].values()),
            "image",
            "runtime",
            "payload",
            "p50 c=1 ms",
            f"/ {base_label}",
            "saturated req/s",
            f"/ {base_label}",
            "MiB per worker (PSS)",
            "to /ping 200 s (median)",
            "to first prediction s",
            f"top-1 % ({(prec.get('top1') or {}).get('images')} demo test images)",
            "image GB",
        ],
        rows,
    )


def targets_table(rows: list[dict]) -> str:
    mark = {True: "met", False: "MISSED", None: "not measured"}
    return table(
        ["target", "measured", "goal", ""], [[r["target"], r["value"], r["goal"], mark[r["met"]]] for r in rows]
    )


def durations(results: dict) -> str:
    """How long the run took, and each suite: `31.0 min (serving 22.5, coldstart 1.2, ...)`."""
    suites = ", ".join(f"{name} {seconds / 60:.1f}" for name, seconds in results.get("suite_seconds", {}).items())
    return f"{results['seconds'] / 60:.1f} min" + (f" ({suites})" if suites else "")


def markdown(results: dict) -> str:
    parts = [
        f"The run took {durations(results)}." if "seconds" in results else "",
        targets_table(targets(results)),
        serving_table(results),
        servers_table(results),
        peer_table(results),
        sweep_table(results),
        cold_start_table(results.get("cold_start")),
        precision_table(results),
        serving_table(results, "precision"),
        cold_start_table((results.get("precision") or {}).get("cold_start")),
        preprocess_table(results),
        training_text(results),
        sizes_table(results),
    ]
    return "\n\n".join(p for p in parts if p)
