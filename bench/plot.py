"""PNG plots of a results document: latency and throughput against concurrency, per payload."""

from __future__ import annotations

from pathlib import Path

from bench import report


def serving(results: dict, path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    serving = results.get("serving", {})
    servers = [s for s in serving.get("servers", []) if s.get("load")]
    if not servers:
        return None
    payloads = list(servers[0]["load"])
    fig, axes = plt.subplots(2, len(payloads), figsize=(4.2 * len(payloads), 7), squeeze=False)
    for col, payload in enumerate(payloads):
        lat, thr = axes[0][col], axes[1][col]
        for i, s in enumerate(servers):
            pts = [p for p in s["load"].get(payload, []) if p["requests"]]
            cs, color = [p["concurrency"] for p in pts], f"C{i}"
            lat.plot(cs, [p["p50_ms"] for p in pts], "o-", color=color, label=f"{s['label']} p50")
            lat.plot(cs, [p["p99_ms"] for p in pts], "x--", color=color, alpha=0.5, label=f"{s['label']} p99")
            thr.plot(cs, [p["rps"] for p in pts], "o-", color=color, label=s["label"])
        # The limit taken in the first judged server's container (report.limit_of).
        ref = next((s for s in servers if report.limit_of(s, payload)[0]), None)
        if ref is not None:
            ms, rate, lim = report.limit_of(ref, payload)
            lat.axhline(ms, color="k", ls=":", label=f"in-process batch 1 ({ref['label']})")
            thr.axhline(1e3 / ms, color="k", ls=":", label=f"in-process batch 1 ({ref['label']})")
            thr.axhline(rate, color="grey", ls="-.", label=f"in-process batch {lim['best_batch'][payload]['batch']}")
        for ax in (lat, thr):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("concurrent connections")
            ax.grid(alpha=0.3)
        lat.set(title=f"{payload} JPEG: latency", ylabel="ms")
        thr.set(title=f"{payload} JPEG: throughput", ylabel="requests/s", ylim=(0, None))
    axes[0][0].legend(fontsize=7)
    axes[1][0].legend(fontsize=7)
    fig.suptitle(f"ResNet-50 224 px, 133 classes\n{results.get('machine', {}).get('summary', '')}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


CAP = 3.0  # ratios to the goal are drawn up to this


def score(target: dict) -> float:
    """A target row's measured value against its goal, >= 1 when met, at most CAP (a zero change
    or a tiny image would run off the chart)."""
    goal = float(target["goal"].split()[1])
    value = target["value"]
    if target["goal"].startswith(">="):
        return min(value / goal, CAP)
    return min(goal / value, CAP) if value else CAP


def ratios(results: dict, path: Path) -> Path | None:
    """Each measured target as value / goal (a bar at or past 1 is met)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report.targets(results) if r["value"] is not None]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(rows) + 1.2))
    scores = [score(r) for r in rows]
    colors = ["tab:green" if r["met"] else "tab:red" for r in rows]
    ax.barh([r["target"] for r in rows], scores, color=colors)
    ax.axvline(1.0, color="k", lw=1)
    for y, s in enumerate(scores):
        if s >= CAP:
            ax.text(CAP, y, f" >= {CAP:g}", va="center", fontsize=7)
    ax.set_xlim(0, CAP * 1.12)
    ax.invert_yaxis()
    ax.tick_params(axis="y", labelsize=7)
    ax.set_xlabel("measured vs goal (>= 1 is met)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
