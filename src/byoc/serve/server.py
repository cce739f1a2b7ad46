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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from byoc.core.errors import ByocError
from byoc.serve import startup
from byoc.serve.config import BATCH_MAX_PAYLOAD_MB, ExecutionParameters, ServeConfig

if TYPE_CHECKING:  # annotations only: these need the serve extra (psutil), which run's steps import as they run
    from byoc.serve.front import Front
    from byoc.serve.mms import ModelServer
    from byoc.serve.models import Registry
    from byoc.serve.sizing import Plan

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


@dataclass(frozen=True)
class _Sized:
    """What this machine allows the model: the settings for it (serverless, body limits) and the
    figures the start-up line reports."""

    config: ServeConfig
    plan: Plan
    cores: int
    gpus: int
    model_bytes: int
    per_model: int  # workers per model: the plan's workers, or a multi-model endpoint's per model
    execution: ExecutionParameters


def run(config: ServeConfig) -> int:
    """Serve `config`'s model until SIGTERM: size, start the model server, open the front, wait for
    a worker, serve, drain. 0 after a drain, 2 when the model server dies; ByocError on a bad
    artifact or setting."""
    started = time.monotonic()
    _stop_at_once_on_signals()
    sized = _size(config)
    workdir = Path(tempfile.mkdtemp(prefix="byoc-serve-"))
    report = workdir / "startup-failure"
    server = _model_server(sized, workdir, report)
    _log_config(sized, server)
    stop = threading.Event()
    _drain_on_signals(stop)
    try:
        server.start()
        with _front(sized, server, workdir) as front:
            return _serve(sized, server, front, report, stop, started)
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _stop_at_once_on_signals() -> None:
    """PID 1 in a container ignores SIGTERM without a handler. Until the front is up there is
    nothing to drain: stop at once (the model server's process group is stopped on the way out)."""
    signal.signal(signal.SIGTERM, _exit_now)
    signal.signal(signal.SIGINT, _exit_now)


def _drain_on_signals(stop: threading.Event) -> None:
    """From here on SIGTERM (SageMaker stopping the instance) and Ctrl-C ask for a drain."""
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())


def _size(config: ServeConfig) -> _Sized:
    """Workers, threads and body limits for this machine, sized without loading the model: the
    workers load it once, and report a failure (startup.py)."""
    from byoc.serve import sizing
    from byoc.serve.models import workers_per_model

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
    # A multi-model endpoint: each model gets its own workers (models.workers_per_model); the plan's
    # workers bound the calls in flight across all models instead.
    per_model = workers_per_model(config.workers) if config.multi_model else plan.workers
    return _Sized(config, plan, cores, gpus, model_bytes, per_model, execution)


def _model_server(sized: _Sized, workdir: Path, report: Path) -> ModelServer:
    """multi-model-server on Unix sockets in `workdir` (not started); its workers write a start-up
    failure to `report`."""
    from byoc.serve.mms import ModelServer

    plan = sized.plan
    return ModelServer(
        sized.config,
        sized.per_model,
        plan.threads,
        sized.gpus,
        workdir,
        report,
        unix_inference=True,
        calls=plan.workers,
    )


def _log_config(sized: _Sized, server: ModelServer) -> None:
    """The `config` event: every setting and what sizing made of it, the first line of each start."""
    config, plan = sized.config, sized.plan
    log.info(
        json.dumps(
            {
                "event": "config",
                **config.describe(),
                "vmargs": server.vmargs,
                "model_server_log": str(server.log_path or "stderr"),
                "model_bytes": sized.model_bytes,
                "gpus": sized.gpus,
                "cores": sized.cores,
                "workers": plan.workers,
                "workers_per_model": sized.per_model if config.multi_model else None,
                "torch_threads": plan.threads,
                "batch_size": plan.batch_size,
                "workers_from": plan.reason,
                "execution_parameters": sized.execution.document(),
            }
        )
    )


@contextmanager
def _front(sized: _Sized, server: ModelServer, workdir: Path) -> Iterator[Front]:
    """The public front, listening at once: /ping says 503 until a worker is ready, so the port
    never lies. Closed on the way out, whatever happened."""
    from byoc.serve.front import Front

    config, plan = sized.config, sized.plan
    front = Front(
        (config.bind_host, config.port),
        server,
        config.max_request_bytes,
        config.timeout,
        plan.batch_size,
        config.max_batch_delay_ms / 1000,
        worker_pids=None if config.multi_model else server.worker_pids,
        execution=sized.execution,
    )
    try:
        if config.multi_model:  # before the front serves: its routes depend on it
            front.models = _registry(sized, server, front, workdir)
        threading.Thread(target=front.serve_forever, name="front", daemon=True).start()
        yield front
    finally:
        front.draining = True
        front.server_close()


def _registry(sized: _Sized, server: ModelServer, front: Front, workdir: Path) -> Registry:
    """A multi-model endpoint's models, loaded on their first request."""
    # Here only: reading model.json brings Pillow and numpy into the front, which a
    # single-model endpoint's front does without.
    from byoc.serve import choice
    from byoc.serve.models import Registry

    config, plan = sized.config, sized.plan
    has_torch = choice.torch_installed()
    return Registry(
        server,
        front.forward,
        config.models_dir,
        workdir,
        workers=sized.per_model,
        calls=plan.workers,
        batch_size=plan.batch_size,
        max_batch_delay=config.max_batch_delay_ms / 1000,
        max_request_bytes=config.max_request_bytes,
        load_timeout=config.startup_timeout,
        unload_timeout=config.timeout,
        max_models=config.max_loaded_models,
        served_bytes=lambda path: choice.served_bytes(path, config.precision, has_torch),
    )


def _serve(
    sized: _Sized, server: ModelServer, front: Front, report: Path, stop: threading.Event, started: float
) -> int:
    """Wait for a worker, say `ready`, serve until SIGTERM (drain, 0) or the model server's death (2)."""
    config = sized.config
    _wait_ready(server, report, config.startup_timeout, stop, config.multi_model)
    if not stop.is_set():
        log.info(
            json.dumps(
                {"event": "ready", "port": front.server_address[1], "seconds": round(time.monotonic() - started, 1)}
            )
        )
    if not _serve_until_stopped(server, stop, config.multi_model):
        return 2
    _drain(front)
    return 0


def _drain(front: Front) -> None:
    """Answer or refuse every accepted connection, resetting none, within GRACE_SECONDS; then the
    `stopped` event with the batch sizes served."""
    log.info(json.dumps({"event": "draining"}))
    draining = time.monotonic()
    drained = front.drain(GRACE_SECONDS)
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
