"""Regenerate docs/guides/img/drift_report.png: `byoc monitor report` on synthetic traffic (the generator
of the monitoring tests, tests/helpers/capture.py) whose photos are darker and whose answers are less sure
than the baseline's.

usage: PYTHONPATH=src:. python scripts/monitor_report_picture.py
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from byoc.cli import main
from tests.helpers import capture as cap

OUT = Path(__file__).resolve().parents[1] / "docs" / "guides" / "img" / "drift_report.png"

with tempfile.TemporaryDirectory() as folder:
    root = Path(folder)
    cap.write_baseline(root / "model")
    shifted = cap.Population(class_weights=(4.0,) + (1.0,) * 9, confidence=(3.0, 2.0), brightness=0.5)
    cap.write_capture(root / "capture", shifted, extra_lines=('{"captureData": {"endpointIn',))
    code = main(["monitor", "report", "--local", str(root / "capture"), "--model", str(root / "model")])
    OUT.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(root / "capture" / "drift_report.png", OUT)
    print(f"exit code {code}; wrote {OUT}")
