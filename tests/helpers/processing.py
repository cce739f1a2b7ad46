"""The Model Monitor bring-your-own-container contract as a processing job runs it: the environment it
sets and `docker run IMAGE monitor` with its folders mounted where the job mounts them."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

from tests import dockerutil as du


def contract_env(source, output, **extra) -> dict[str, str]:
    """The environment Model Monitor sets (the contract's example, with these folders)."""
    return {
        "dataset_format": '{"sagemakerCaptureJson": {"captureIndexNames": ["endpointInput","endpointOutput"]}}',
        "dataset_source": str(source),
        "output_path": str(output),
        "publish_cloudwatch_metrics": "Enabled",
        "sagemaker_endpoint_name": "demo-endpoint",
        "sagemaker_monitoring_schedule_name": "demo-schedule",
        "start_time": "2026-01-05T10:00:00Z",
        "end_time": "2026-01-05T11:00:00Z",
        **extra,
    }


def run_job(
    image: str, source: Path, baseline: Path, results: Path, output: Path, **extra: str
) -> subprocess.CompletedProcess:
    """`docker run IMAGE monitor` without network, as the caller's user: the capture at
    /opt/ml/processing/input/endpoint, the baseline (a model folder) at /opt/ml/processing/baseline,
    results at /opt/ml/processing/resultdata and /opt/ml/output (metrics, message) on the host;
    `extra`: environment that replaces the contract example's (start_time and end_time: the hour analysed)."""
    results.mkdir(parents=True, exist_ok=True)
    output.mkdir(parents=True, exist_ok=True)
    env = contract_env("/opt/ml/processing/input/endpoint", "/opt/ml/processing/resultdata", **extra)
    name = f"byoc-monitor-test-{uuid.uuid4().hex[:8]}"
    args = ["run", "--rm", "--name", name, "--network", "none", "--user", f"{os.getuid()}:{os.getgid()}"]
    args += ["-v", f"{source}:/opt/ml/processing/input/endpoint:ro"]
    args += ["-v", f"{baseline}:/opt/ml/processing/baseline:ro"]
    args += ["-v", f"{results}:/opt/ml/processing/resultdata", "-v", f"{output}:/opt/ml/output"]
    for key, value in env.items():
        args += ["-e", f"{key}={value}"]
    return du.run([*args, image, "monitor"], timeout=300)
