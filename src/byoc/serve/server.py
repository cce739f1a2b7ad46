"""`serve`: size the workers, start multi-model-server on loopback (its workers load and
check the model), put the front on the public port, and drain on SIGTERM. Exit codes: 0
after a clean shutdown, 1 on a bad artifact or setting (one-line reason on stderr), 2 when
the model server dies."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

from byoc.core.errors import ByocError
from byoc.serve import startup
from byoc.serve.config import BATCH_MAX_PAYLOAD_MB, ServeConfig

log = logging.getLogger("byoc.serve")

GRACE_SECONDS = 20  # SageMaker allows 30 s after SIGTERM: drain, then stop the model server (<= 10 s)
TAIL_LINES = 20  # of the model server's log, shown when it crashes


def _show_tail(server) -> None:
    """The model server log's last lines on stderr (CloudWatch on SageMaker): a crash's context,
    which its log file (byoc.serve.mms) would take away with the container."""
    lines = server.log_tail(TAIL_LINES)
    if lines:
        log.error("the model server log's last %d lines (%s):\n%s", len(lines), server.log_path, "\n".join(lines))


def _wait_ready(server, report: Path, timeout: float, stop: threading.Event, multi_model: bool) -> None:
    """Until a worker answers with the model loaded, or (multi-model) the model server listens."""
    deadline = time.monotonic() + timeout
    while not stop.is_set() and time.monotonic() < deadline:
        failure = startup.read(report)
        if failure:
            if server.crashed:  # the model server failed, not the model: its log says why
                _show_tail(server)
            raise ByocError(failure)
        if not server.alive():
            _show_tail(server)
            raise ByocError(f"the model server exited while starting; see {server.log_where}")
        if server.listening() if multi_model else server.probe():
            return
        time.sleep(0.2)
    if not stop.is_set():
        _show_tail(server)
        raise ByocError(f"no model worker became ready within {timeout:.0f} s")


def _workers_died(server, seen: frozenset[int]) -> frozenset[int]:
    """One `worker_died` line for each model worker of `seen` that is gone (the model server starts
    another); the workers alive now. Their tracebacks are in the model server log."""
    alive = server.worker_pids()
    for pid in sorted(seen - alive):
        log.error(json.dumps({"event": "worker_died", "pid": pid, "log": server.log_where}))
    return alive


def _serve_until_stopped(server, stop: threading.Event, multi_model: bool) -> bool:
    """Until SIGTERM (True) or the model server's exit (False, its log's last lines shown), saying
    when a worker dies (a multi-model endpoint's workers also end when their model is unloaded)."""
    seen = frozenset() if multi_model else server.worker_pids()
    while not stop.wait(1.0):
        if not server.alive():
            _show_tail(server)
            log.error("the model server exited unexpectedly; stopping so the platform replaces this instance")
            return False
        if not multi_model:
            seen = _workers_died(server, seen)
    return True


def _exit_now(signum, _frame):
    raise SystemExit(128 + signum)


def run(config: ServeConfig) -> int:
    from byoc.serve import sizing
    from byoc.serve.front import Front
    from byoc.serve.mms import ModelServer
    from byoc.serve.models import Registry, workers_per_model

    started = time.monotonic()
    stop = threading.Event()
    # PID 1 in a container ignores SIGTERM without a handler. Until the front is up there is
    # nothing to drain: stop at once (the model server's process group is stopped on the way out).
    signal.signal(signal.SIGTERM, _exit_now)
    signal.signal(signal.SIGINT, _exit_now)
    # Sized without loading the model: the workers load it once, and report a failure (startup.py).
    cores, gpus, model_bytes = sizing.cpu_count(), sizing.gpu_count(), sizing.weights_bytes(config.model_dir)
    memory = sizing.memory_available()
    # SageMaker Serverless Inference: a memory limit of 1024..6144 MB, vCPUs in proportion, 4 MB bodies.
    serverless = sizing.serverless(sizing.memory_limit(), sizing.cpu_quota(), cores, config.serverless)
    if serverless is not None:
        config = config.for_serverless()
    plan = sizing.plan(
        cores, gpus, model_bytes, memory, config.workers, config.torch_threads, serverless, config.batch_size
    )
    # The largest body that batch transform's concurrent requests can carry here: the body limit under
    # SAGEMAKER_BATCH without SAGEMAKER_MAX_PAYLOAD_IN_MB, and what /execution-parameters offers.
    concurrent = config.max_concurrent_transforms or plan.workers
    machine_payload_mb = sizing.payload_mb(memory, plan.workers, model_bytes, concurrent, BATCH_MAX_PAYLOAD_MB)
    config = config.for_machine(machine_payload_mb)
    execution = config.execution_parameters(plan.workers, machine_payload_mb)
    workdir = Path(tempfile.mkdtemp(prefix="byoc-serve-"))
    report = workdir / "startup-failure"
    # A multi-model endpoint: each model gets its own workers (models.workers_per_model); the plan's
    # workers bound the calls in flight across all models instead.
    per_model = workers_per_model(config.workers) if config.multi_model else plan.workers
    server = ModelServer(
        config, per_model, plan.threads, gpus, workdir, report, unix_inference=True, calls=plan.workers
    )
    log.info(
        json.dumps(
            {
                "event": "config",
                **config.describe(),
                "vmargs": server.vmargs,
                "model_server_log": str(server.log_path or "stderr"),
                "model_bytes": model_bytes,
                "gpus": gpus,
                "cores": cores,
                "workers": plan.workers,
                "workers_per_model": per_model if config.multi_model else None,
                "torch_threads": plan.threads,
                "batch_size": plan.batch_size,
                "workers_from": plan.reason,
                "execution_parameters": execution.document(),
            }
        )
    )
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    front = None
    try:
        server.start()
        # Listen at once: /ping says 503 until a worker is ready, so the port never lies.
        front = Front(
            (config.bind_host, config.port),
            server,
            config.max_request_bytes,
            config.timeout,
            plan.batch_size,
            config.max_batch_delay_ms / 1000,
            worker_pids=None if config.multi_model else server.worker_pids,
            execution=execution,
        )
        if config.multi_model:  # before the front serves: its routes depend on it
            # Here only: reading model.json brings Pillow and numpy into the front, which a
            # single-model endpoint's front does without.
            from byoc.serve import choice

            has_torch = choice.torch_installed()
            front.models = Registry(
                server,
                front.forward,
                config.models_dir,
                workdir,
                workers=per_model,
                calls=plan.workers,
                batch_size=plan.batch_size,
                max_batch_delay=config.max_batch_delay_ms / 1000,
                max_request_bytes=config.max_request_bytes,
                load_timeout=config.startup_timeout,
                unload_timeout=config.timeout,
                max_models=config.max_loaded_models,
                served_bytes=lambda path: choice.served_bytes(path, config.precision, has_torch),
            )
        threading.Thread(target=front.serve_forever, name="front", daemon=True).start()
        _wait_ready(server, report, config.startup_timeout, stop, config.multi_model)
        if not stop.is_set():
            log.info(
                json.dumps(
                    {"event": "ready", "port": front.server_address[1], "seconds": round(time.monotonic() - started, 1)}
                )
            )
        if not _serve_until_stopped(server, stop, config.multi_model):
            return 2
        log.info(json.dumps({"event": "draining"}))
        draining = time.monotonic()
        drained = front.drain(GRACE_SECONDS)  # answers or refuses every accepted connection, resets none
        log.info(
            json.dumps(
                {
                    "event": "stopped",
                    "drained": drained,
                    "drain_seconds": round(time.monotonic() - draining, 2),
                    "calls_by_batch_size": dict(sorted(front.batcher.sizes.items())),
                }
            )
        )
        return 0
    finally:
        if front is not None:
            front.draining = True
            front.server_close()
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="serve", description="Serve a byoc model (SageMaker hosting contract).")
    parser.add_argument("--model-dir", help="model directory (default: $SAGEMAKER_BASE_DIR/model, i.e. /opt/ml/model)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        return run(ServeConfig.from_env(model_dir=args.model_dir))
    except ByocError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
