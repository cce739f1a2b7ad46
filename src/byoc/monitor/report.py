"""The drift report: a table for the terminal, a PNG (class mix then and now, confidence and brightness
histograms, the inputs least like the baseline) and an HTML page holding both. Pillow drawing only:
the report is made where the monitoring job runs, which has no matplotlib.
"""

from __future__ import annotations

import base64
import html
import io
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from byoc.monitor import baseline as bl
from byoc.monitor import drift_stats
from byoc.monitor.baseline import Baseline
from byoc.monitor.drift import Check, Result

PNG_FILE = "drift_report.png"
HTML_FILE = "drift_report.html"
WIDTH, MARGIN = 1100, 40
THEN, NOW, INK, GRID, BAD = (70, 110, 190), (235, 130, 40), (30, 30, 30), (210, 210, 210), (200, 30, 30)
CLASSES_SHOWN = 15
Font = ImageFont.ImageFont | ImageFont.FreeTypeFont


def _font(size: int) -> Font:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # a Pillow without FreeType: its one bitmap size
        return ImageFont.load_default()


# --------------------------------------------------------------------------- the table
def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.3g}"


def table(result: Result) -> str:
    """One line per check: metric, value, threshold, p-value, verdict; then the notes."""
    rows = [("metric", "value", "threshold", "p-value", "result")]
    rows += [
        (c.metric, _number(c.value), _number(c.threshold), _number(c.p_value), "VIOLATED" if c.violated else "ok")
        for c in result.checks
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    scan = result.scan
    lines.append(
        f"{len(result.observations.confidence)} answers, {len(result.observations.features)} images from "
        f"{scan.records} records in {scan.files} capture files; {scan.malformed} unusable lines"
        + (f", {scan.outside_window} outside the time window" if scan.outside_window else "")
    )
    lines += [f"note: {n}" for n in result.notes]
    return "\n".join(lines)


# --------------------------------------------------------------------------- the picture
def _bars(
    draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], then: np.ndarray, now: np.ndarray, names: Sequence[str]
) -> None:
    """Paired bars of two share vectors in `box` (left, top, right, bottom), names under them."""
    left, top, right, bottom = box
    peak = max(float(then.max(initial=0)), float(now.max(initial=0)), 1e-9)
    slot = (right - left) / max(len(names), 1)
    small = _font(11)
    draw.line([(left, bottom), (right, bottom)], fill=INK)
    for i, name in enumerate(names):
        x = left + i * slot
        for j, (share, colour) in enumerate(((then[i], THEN), (now[i], NOW))):
            height = (bottom - top) * float(share) / peak
            x0 = x + slot * (0.15 + 0.35 * j)
            draw.rectangle([x0, bottom - height, x0 + slot * 0.33, bottom], fill=colour)
        if name:
            draw.text((x + slot / 2, bottom + 4), name[:12], fill=INK, font=small, anchor="ma")


def _panel_title(draw: ImageDraw.ImageDraw, y: int, text: str) -> None:
    draw.text((MARGIN, y), text, fill=INK, font=_font(16))


def _class_panel(draw: ImageDraw.ImageDraw, y: int, base: Baseline, result: Result) -> int:
    then = drift_stats.shares(base.label_counts)
    now = drift_stats.shares(result.observations.label_counts())
    order = np.argsort(-np.maximum(then, now), kind="stable")[:CLASSES_SHOWN]
    _panel_title(draw, y, f"Predicted classes: validation split (blue) and captured (orange), top {len(order)}")
    _bars(draw, (MARGIN, y + 30, WIDTH - MARGIN, y + 200), then[order], now[order], [base.labels[i] for i in order])
    return y + 240


def _histogram_panel(draw: ImageDraw.ImageDraw, y: int, name: str, base: Baseline, result: Result) -> int:
    if name not in base.histograms or not result.observations.numeric(name).size:
        return y
    edges, counts = base.histograms[name]
    group = max(1, len(counts) // 25)  # at most 25 bars: the stored bins grouped for the eye
    then = np.add.reduceat(drift_stats.shares(counts), np.arange(0, len(counts), group))
    now_counts = drift_stats.histogram(result.observations.numeric(name), edges)
    now = np.add.reduceat(drift_stats.shares(now_counts), np.arange(0, len(counts), group))
    labels = [f"{edges[i]:.2g}" if k % 4 == 0 else "" for k, i in enumerate(range(0, len(counts), group))]
    _panel_title(draw, y, f"{name.replace('_', ' ').capitalize()}: validation split (blue) and captured (orange)")
    _bars(draw, (MARGIN, y + 30, WIDTH - MARGIN, y + 170), then, now, labels)
    return y + 210


def _outlier_panel(image: Image.Image, draw: ImageDraw.ImageDraw, y: int, result: Result) -> int:
    if not result.outliers:
        return y
    _panel_title(draw, y, "Captured inputs least like the validation split (the feature that sets them apart)")
    small, x, top = _font(11), MARGIN, y + 30
    for outlier in result.outliers:
        thumb = Image.open(io.BytesIO(outlier.thumbnail))
        if x + 170 > WIDTH:
            x, top = MARGIN, top + 150
        image.paste(thumb, (x + (96 - thumb.width) // 2, top))
        draw.text((x, top + 100), outlier.reason, fill=INK, font=small)
        answer = f"{outlier.label} {outlier.confidence:.2f}" if outlier.label and outlier.confidence is not None else ""
        draw.text((x, top + 114), answer[:24], fill=INK, font=small)
        x += 170
    return top + 150


def _verdict_lines(result: Result) -> list[tuple[str, tuple[int, int, int]]]:
    if not result.violations:
        return [("No constraint violated.", INK)]
    return [(f"VIOLATED {c.metric}: {c.description}", BAD) for c in result.checks if c.violated]


def picture(base: Baseline, result: Result) -> Image.Image:
    """The report as one image."""
    canvas = Image.new("RGB", (WIDTH, 2400), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((MARGIN, 16), "byoc drift report", fill=INK, font=_font(22))
    y = 50
    for text, colour in _verdict_lines(result):
        for part in textwrap.wrap(text, 150, subsequent_indent="    "):
            draw.text((MARGIN, y), part, fill=colour, font=_font(13))
            y += 18
    y += 16
    if result.observations.confidence:
        y = _class_panel(draw, y, base, result)
    for name in (bl.CONFIDENCE, "brightness", "aspect_ratio"):
        y = _histogram_panel(draw, y, name, base, result)
    y = _outlier_panel(canvas, draw, y, result)
    return canvas.crop((0, 0, WIDTH, y + 20))


# --------------------------------------------------------------------------- the page
def _check_row(c: Check) -> str:
    cls = ' class="bad"' if c.violated else ""
    cells = [c.metric, _number(c.value), _number(c.threshold), _number(c.p_value), "VIOLATED" if c.violated else "ok"]
    tds = "".join(f"<td>{html.escape(x)}</td>" for x in cells)
    return f"<tr{cls}>{tds}<td>{html.escape(c.description)}</td></tr>"


def page(result: Result, png: bytes) -> str:
    """A self-contained HTML page: the checks, the problems found in the capture files, the picture."""
    rows = "\n".join(_check_row(c) for c in result.checks)
    problems = "".join(
        f"<li>{html.escape(k)}: {v} (first at {html.escape(result.scan.examples[k])})</li>"
        for k, v in sorted(result.scan.problems.items())
    )
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in result.notes)
    picture_uri = "data:image/png;base64," + base64.b64encode(png).decode()
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>byoc drift report</title>
<style>body{{font-family:sans-serif;margin:2em}} td,th{{padding:4px 8px;border-bottom:1px solid #ddd;text-align:left}}
tr.bad td{{color:#c00;font-weight:bold}}</style></head><body>
<h1>byoc drift report</h1>
<p>{len(result.violations)} violation(s); {result.scan.records} capture records read,
{result.scan.malformed} lines unusable.</p>
<table><tr><th>metric</th><th>value</th><th>threshold</th><th>p-value</th><th>result</th><th>what it means</th></tr>
{rows}
</table>
{f"<h2>Unusable capture lines</h2><ul>{problems}</ul>" if problems else ""}
{f"<h2>Notes</h2><ul>{notes}</ul>" if notes else ""}
<img src="{picture_uri}" alt="class distribution, confidence and brightness then and now, unusual inputs">
</body></html>
"""


def write(out: Path, base: Baseline, result: Result) -> tuple[Path, Path]:
    """drift_report.png and drift_report.html into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    picture(base, result).save(buffer, format="PNG", optimize=True)
    png = buffer.getvalue()
    (out / PNG_FILE).write_bytes(png)
    (out / HTML_FILE).write_text(page(result, png))
    return out / PNG_FILE, out / HTML_FILE
