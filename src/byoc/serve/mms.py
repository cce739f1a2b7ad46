"""multi-model-server behind the front: its config and model store under a temp dir,
its process, and the model's registration through its management API."""

from __future__ import annotations

import http.client
import json
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

from byoc.serve import startup
from byoc.serve.config import MODEL_DIR_ENV, THREADS_ENV, ServeConfig
from byoc.serve.headers import CONTENT_TYPE, PROBE

log = logging.getLogger(__name__)

MODEL_NAME = "model"
HANDLER = "byoc.serve.handler:handle"
LOG_CONFIG = Path(__file__).with_name("log4j2.xml")  # stdout only; per-request lines off (see there)


def free_port() -> int:
    """A free loopback port below 32767 (MMS rejects higher ones, i.e. the kernel's ephemeral range)."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 32767)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise OSError("no free loopback port in 20000-32766 for the model server")


class ModelServer:
    """One MMS process group: the Java frontend on loopback ports and its Python workers."""

    def __init__(self, config: ServeConfig, workers: int, threads: int, gpus: int, workdir: Path, startup_report: Path):
        self.config, self.workers, self.threads, self.gpus = config, workers, threads, gpus
        self.workdir, self.startup_report = Path(workdir), Path(startup_report)
        self.inference_port, self.management_port = free_port(), free_port()
        self.process: subprocess.Popen | None = None

    def _write_files(self) -> Path:
        """config.properties and a model store holding only a manifest (the model dir stays untouched)."""
        store = self.workdir / "model-store"
        manifest = store / MODEL_NAME / "MAR-INF" / "MANIFEST.json"
        manifest.parent.mkdir(parents=True, exist_ok=True)
        manifest.write_text(
            json.dumps(
                {
                    "runtime": "python",
                    "model": {"modelName": MODEL_NAME, "handler": HANDLER},
                    "modelServerVersion": "1.0",
                    "implementationVersion": "1.0",
                    "specificationVersion": "1.0",
                }
            )
        )
        # The front enforces the request limit with a JSON 413; MMS's own limit sits just above it.
        limit = self.config.max_request_bytes + 1024 * 1024
        props = {
            "inference_address": f"http://127.0.0.1:{self.inference_port}",
            "management_address": f"http://127.0.0.1:{self.management_port}",
            "model_store": str(store),
            # No load_models: register() adds the model, so that a refusal reaches the start-up report.
            "default_workers_per_model": self.workers,
            "number_of_gpu": self.gpus,
            "default_response_timeout": self.config.timeout,
            "unregister_model_timeout": self.config.timeout,
            "max_request_size": limit,
            "max_response_size": limit,
            "decode_input_request": "false",
            "async_logging": "true",
            # MMS starts a Python process every metric_time_interval seconds (default 60) to log
            # system metrics (60-130 ms of CPU each time, measured), which nothing here reads:
            # SageMaker reports the instance's CPU and memory itself.
            "metric_time_interval": 365 * 24 * 3600,
            "enable_envvars_config": "false",
            "vmargs": self.config.vmargs,
        }
        path = self.workdir / "config.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        return path

    def start(self) -> None:
        properties = self._write_files()
        logs = self.workdir / "logs"
        logs.mkdir(exist_ok=True)
        env = dict(
            os.environ,
            **{
                MODEL_DIR_ENV: str(self.config.model_dir),
                THREADS_ENV: str(self.threads),
                startup.REPORT_ENV: str(self.startup_report),
                "OMP_NUM_THREADS": str(self.threads),
                "TEMP": str(self.workdir),
                "LOG_LOCATION": str(logs),
                "METRICS_LOCATION": str(logs),
                "BYOC_MMS_ACCESS_LOG_LEVEL": "info" if self.config.access_log else "warn",
            },
        )
        # Waiting OpenMP threads sleep instead of spinning: when a core is busy elsewhere (the JVM,
        # the front, another worker, a neighbour) spinning cost ~10x the CPU per request and 4x the
        # latency in bench/ (README "Performance"). An explicit setting still wins.
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        cmd = [
            sys.executable,
            "-m",
            "mms.model_server",
            "--start",
            "--foreground",
            "--mms-config",
            str(properties),
            "--model-store",
            str(properties.parent / "model-store"),
            "--log-config",
            str(LOG_CONFIG),
        ]
        # Own process group: stop() reaches the JVM and every worker it forked.
        self.process = subprocess.Popen(cmd, cwd=self.workdir, env=env, start_new_session=True)
        threading.Thread(target=self.register, name="mms-register", daemon=True).start()

    def register(self, poll: float = 0.05) -> None:
        """Register the model once the management API listens. MMS batches nothing (batch size 1):
        the front does (byoc.serve.batching). A refusal goes to the start-up report, so the server
        stops with the reason instead of waiting for a worker that never comes."""
        query = urlencode(
            {
                "url": MODEL_NAME,
                "model_name": MODEL_NAME,
                "initial_workers": self.workers,
                "batch_size": 1,
                "synchronous": "false",
            }
        )
        deadline = time.monotonic() + self.config.startup_timeout
        while self.alive() and time.monotonic() < deadline:
            conn = http.client.HTTPConnection("127.0.0.1", self.management_port, timeout=10)
            try:
                conn.request("POST", f"/models?{query}")
                resp = conn.getresponse()
                body = resp.read().decode(errors="replace")
            except (OSError, http.client.HTTPException):
                time.sleep(poll)  # not listening yet
                continue
            finally:
                conn.close()
            if resp.status < 300 or resp.status == 409:  # 409: an earlier attempt that timed out got through
                log.debug("model registered: %s", body.strip())
                return
            reason = f"the model server refused the model: HTTP {resp.status} {' '.join(body.split())[:300]}"
            tmp = self.startup_report.with_name(f"{self.startup_report.name}.register")
            tmp.write_text(reason + "\n")
            os.replace(tmp, self.startup_report)
            return

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def probe(self, timeout: float = 2.0) -> bool:
        """True when a worker answers a health probe: MMS routed it, the worker process is alive
        and its model is loaded (MMS's own worker status says READY before the model loads)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.inference_port, timeout=timeout)
        try:
            conn.request("POST", f"/predictions/{MODEL_NAME}", b"", {PROBE: "1", CONTENT_TYPE: ""})
            resp = conn.getresponse()
            resp.read()
            return resp.status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def stop(self, timeout: float = 5.0) -> None:
        if self.process is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(timeout)
                break
            except subprocess.TimeoutExpired:
                log.warning("model server did not stop within %.0f s; killing it", timeout)
