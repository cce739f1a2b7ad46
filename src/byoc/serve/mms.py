"""multi-model-server behind the front: its config and model store under serve's private work
dir, its process, and the model's registration.

MMS 1.1.11's management API registers a model from any http(s) URL it is given (there is no
allowed-URLs setting: TorchServe added `allowed_urls` later) and unregisters or rescales models
on request. So it listens on a Unix socket in the work dir (mode 0700), is used once, by
`register`, and the socket's name is then removed: MMS keeps the listener, but no process in the
container or on the host can connect to it again. Under SAGEMAKER_MULTI_MODEL the front loads and
unloads models on SageMaker's request (byoc.serve.models), so the name stays, guarded only by the
work dir's mode: the front, never a client, decides what is registered. The workers reach the frontend through Unix
sockets in the same dir (MMS's `use_native_io`). The inference API is a Unix socket there too
(`unix_inference`), or a loopback TCP port in SAGEMAKER_SAFE_PORT_RANGE below 32767.

MMS's own output (its Java frontend's log, the JVM's warnings, each worker's output as MMS relays it)
goes to the model server log (BYOC_MODEL_SERVER_LOG; a file in the work dir by default), not to the
container's stderr, which on SageMaker is CloudWatch's: there it would bury the lines that matter
under MMS's banner and per-worker chatter. What still reaches stderr, one line each (`passed_on`):
byoc's JSON events from the workers (model_loaded, request_failed, metrics), MMS's ERROR and FATAL
lines, and its access log when BYOC_ACCESS_LOG asks for it. A model that fails to load is reported by
serve in one line (byoc.serve.startup); a worker that dies, by serve's `worker_died` event; a model
server that exits, by serve with the log's last lines (`ModelServer.log_tail`)."""

from __future__ import annotations

import collections
import contextlib
import http.client
import json
import logging
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Collection
from pathlib import Path
from urllib.parse import urlencode

import psutil
from sagemaker_inference import parameters as sm

from byoc.core.errors import ByocError, ConfigError
from byoc.serve import sizing, startup
from byoc.serve.config import MODEL_DIR_ENV, THREADS_ENV, TO_STDERR, PortRange, ServeConfig
from byoc.serve.headers import CONTENT_TYPE, PROBE

log = logging.getLogger(__name__)

WORKER_SCRIPT = "model_service_worker"  # multi-model-server's Python worker (mms/model_service_worker.py)

MODEL_NAME = "model"
HANDLER = "byoc.serve.handler:handle"
LOG_CONFIG = Path(__file__).with_name("log4j2.xml")  # stdout only; per-request lines off (see there)
LOG_FILE = "model-server.log"  # in the work dir, unless BYOC_MODEL_SERVER_LOG names another place
# A line of MMS's log as log4j2.xml's pattern writes it: "DATE [LEVEL] THREAD LOGGER - MESSAGE".
MMS_LINE = re.compile(r"^\S+ \[(?P<level>[A-Z]+) *\] (?P<thread>\S+) (?P<logger>\S+) - (?P<message>.*)$")
BYOC_EVENT = '{"event": '  # how byoc's JSON log lines start (json.dumps of {"event": ...})
# MMS rejects ports from 32767 up (its Connector.parse), i.e. the kernel's ephemeral range.
MAX_PORT = 32766
DEFAULT_PORTS = PortRange(20000, MAX_PORT)
BIND_ATTEMPTS = 3  # starts of MMS when another process takes its inference port first
SOCKET_PATH_MAX = 107  # bytes in a Unix socket's path (sun_path), on Linux


def free_port(safe: PortRange | None = None, exclude: Collection[int] = ()) -> int:
    """A loopback port free right now, in `safe` (SAGEMAKER_SAFE_PORT_RANGE) and below 32767, or
    anywhere in 20000-32766 when `safe` is None. Another process may take it before MMS binds it:
    ModelServer.start notices and starts MMS again on another."""
    allowed = DEFAULT_PORTS if safe is None else safe.intersect(PortRange(1, MAX_PORT))
    if allowed is None:
        raise ConfigError(
            f"{sm.SAFE_PORT_RANGE_ENV}={safe} has no port below 32767, and multi-model-server takes none above: "
            "give a range that starts below 32767"
        )
    candidates = [port for port in range(allowed.first, allowed.last + 1) if port not in exclude]
    random.shuffle(candidates)
    for port in candidates:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    where = f" ({sm.SAFE_PORT_RANGE_ENV}={safe})" if safe is not None else ""
    raise ByocError(f"no free loopback port in {allowed}{where} for the model server")


def passed_on(line: str, access_log: bool = False) -> str | None:
    """What of one line of MMS's output reaches the container's stderr: a worker's byoc event (its
    JSON alone), an ERROR or FATAL line of MMS's (whole), an access-log line when asked for; None for
    the rest (banner, JVM warnings, worker chatter, stack-trace lines), which stays in the log file."""
    match = MMS_LINE.match(line)
    if match is None:
        return None
    if match["message"].startswith(BYOC_EVENT):
        return match["message"]
    if match["level"] in ("ERROR", "FATAL") or (access_log and match["logger"] == "ACCESS_LOG"):
        return line
    return None


def _port_taken(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a Unix socket (an MMS `unix:/path` address)."""

    def __init__(self, path: Path, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class ModelServer:
    """One MMS process group: the Java frontend and its Python workers, reachable only through
    Unix sockets in the private work dir, and the inference port when that is TCP."""

    def __init__(
        self,
        config: ServeConfig,
        workers: int,
        threads: int,
        gpus: int,
        workdir: Path,
        startup_report: Path,
        unix_inference: bool = False,
        calls: int | None = None,
    ):
        """`workers` per model; `calls`: the most calls the front sends at once (default `workers`),
        which the JVM's heap is sized for."""
        self.config, self.workers, self.threads, self.gpus = config, workers, threads, gpus
        self.workdir, self.startup_report = Path(workdir), Path(startup_report)
        self.management_socket = self.workdir / "mms-management.sock"
        if len(os.fsencode(self.management_socket)) > SOCKET_PATH_MAX:
            raise ByocError(
                f"the work dir {self.workdir} is too long a path for the model server's Unix sockets "
                f"(at most {SOCKET_PATH_MAX} bytes): set TMPDIR to a shorter directory"
            )
        self.inference_socket: Path | None = self.workdir / "mms-inference.sock" if unix_inference else None
        # The front's port is excluded: the front binds it after MMS starts.
        self.inference_port: int | None = None if unix_inference else free_port(config.safe_ports, {config.port})
        # The JVM's options: SAGEMAKER_MODEL_SERVER_VMARGS, else a heap sized for a full body per worker.
        self.vmargs = config.vmargs or (
            f"-Xmx{sizing.jvm_heap_mb(config.max_request_bytes, calls or workers)}m -XX:+UseContainerSupport"
        )
        # MMS's own output: this file, or None for the container's stderr (BYOC_MODEL_SERVER_LOG=-).
        where = config.model_server_log
        self.log_path: Path | None = None if where == TO_STDERR else Path(where or self.workdir / LOG_FILE)
        self.crashed = False  # MMS itself failed (`_report`), not a model: serve shows the log's last lines
        self.process: subprocess.Popen | None = None
        self._lock = threading.Lock()  # self.process against stop()
        self._stopping = False
        self._starting = False  # MMS has not listened yet, and may be started again on another port

    @property
    def store(self) -> Path:
        """MMS's model store: one manifest per model, nothing else (the models' dirs stay untouched)."""
        return self.workdir / "model-store"

    def write_manifest(self, name: str, model_dir: Path | None = None, report: Path | None = None) -> None:
        """The store entry MMS registers `name` from. Its "byoc" part, which MMS passes to the
        handler untouched (context.manifest), says where the artifact is and where a load failure
        is reported (byoc.serve.handler); without it the worker reads BYOC_MODEL_DIR."""
        manifest = self.store / name / "MAR-INF" / "MANIFEST.json"
        manifest.parent.mkdir(parents=True, exist_ok=True)
        document: dict = {
            "runtime": "python",
            "model": {"modelName": name, "handler": HANDLER},
            "modelServerVersion": "1.0",
            "implementationVersion": "1.0",
            "specificationVersion": "1.0",
        }
        if model_dir is not None:
            document["byoc"] = {"model_dir": str(model_dir), "report": str(report or "")}
        manifest.write_text(json.dumps(document))

    def _write_files(self) -> Path:
        """config.properties and the store (the single model's manifest unless multi-model)."""
        store = self.store
        store.mkdir(parents=True, exist_ok=True)
        if not self.config.multi_model:
            self.write_manifest(MODEL_NAME)
        # The front enforces the request limit with a JSON 413; MMS's own limits sit just above it (a
        # framed batch of requests within the limit adds its parts' headers), for requests and answers.
        limit = self.config.max_request_bytes + 1024 * 1024
        if self.inference_socket is not None:
            inference = f"unix:{self.inference_socket}"
        else:
            inference = f"http://127.0.0.1:{self.inference_port}"
        props = {
            "inference_address": inference,
            "management_address": f"unix:{self.management_socket}",
            "use_native_io": "true",  # Unix sockets (its default; required for unix: addresses)
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
            "vmargs": self.vmargs,
        }
        path = self.workdir / "config.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        return path

    def start(self) -> None:
        """Start MMS, and in a thread register the model once MMS listens (starting MMS again on
        another port when another process took the inference port first)."""
        os.chmod(self.workdir, 0o700)  # the sockets' only guard against other users in the container
        self._starting = True
        try:
            self._spawn()
        except BaseException:
            self._starting = False
            raise
        threading.Thread(target=self._bring_up, name="mms-start", daemon=True).start()

    def _spawn(self) -> None:
        properties = self._write_files()
        logs = self.workdir / "logs"
        logs.mkdir(exist_ok=True)
        env = dict(
            os.environ,
            **{
                THREADS_ENV: str(self.threads),
                startup.REPORT_ENV: str(self.startup_report),
                "OMP_NUM_THREADS": str(self.threads),
                "TEMP": str(self.workdir),  # java.io.tmpdir: where the workers' sockets go
                "LOG_LOCATION": str(logs),
                "METRICS_LOCATION": str(logs),
                "BYOC_MMS_ACCESS_LOG_LEVEL": "info" if self.config.access_log else "warn",
            },
        )
        if not self.config.multi_model:  # each model's manifest names its dir instead
            env[MODEL_DIR_ENV] = str(self.config.model_dir)
        # Waiting OpenMP threads sleep instead of spinning: when a core is busy elsewhere (the JVM,
        # the front, another worker, a neighbour) spinning cost ~10x the CPU per request and 4x the
        # latency in bench/ (docs/guides/performance.md). An explicit setting still wins.
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
        with self._lock:
            if self._stopping:
                return
            self.management_socket.unlink(missing_ok=True)  # its appearance says MMS listens
            # Own process group: stop() reaches the JVM and every worker it forked.
            self.process = subprocess.Popen(
                cmd, cwd=self.workdir, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
            threading.Thread(target=self._relay, args=(self.process.stdout,), name="mms-log", daemon=True).start()

    def _relay(self, output) -> None:
        """MMS's output, line by line, to the model server log (or stderr), the lines that matter to
        stderr too (`passed_on`). Read to its end whatever happens: a full pipe would stall MMS."""
        log_file = None
        if self.log_path is not None:
            try:
                self.log_path.parent.mkdir(parents=True, exist_ok=True)
                log_file = open(self.log_path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115
            except OSError as exc:
                log.error("cannot write the model server log %s (%s): it goes to stderr", self.log_path, exc)
        with output:
            for raw in output:
                line = raw.decode(errors="replace").rstrip("\r\n")
                shown = line if log_file is None else passed_on(line, self.config.access_log)
                if log_file is not None:
                    with contextlib.suppress(OSError):  # a full disk loses log lines, never the server
                        log_file.write(line + "\n")
                        log_file.flush()
                if shown is not None:
                    sys.stderr.write(shown + "\n")
                    sys.stderr.flush()
        if log_file is not None:
            log_file.close()

    def log_tail(self, lines: int) -> list[str]:
        """The model server log's last `lines` lines (none when it goes to stderr, or is unreadable)."""
        if self.log_path is None:
            return []
        try:
            with open(self.log_path, "rb") as fh:
                return [x.decode(errors="replace").rstrip("\r\n") for x in collections.deque(fh, maxlen=lines)]
        except OSError:
            return []

    @property
    def log_where(self) -> str:
        """Where MMS's log is, in words for a message."""
        return str(self.log_path) if self.log_path is not None else "its log above"

    def _bring_up(self) -> None:
        """Wait until MMS listens, register the model, then remove the management socket's name."""
        try:
            listening = self._listen()
        except ByocError as exc:  # no free port left to start it again on
            self._report(str(exc))
            listening = False
        finally:
            self._starting = False
        if self.config.multi_model:
            return  # models come and go through byoc.serve.models, over the management socket
        try:
            if listening:
                self.register()
        finally:
            # Nothing after this can reach the management API: no model is added, removed or rescaled.
            self.management_socket.unlink(missing_ok=True)

    def _listen(self) -> bool:
        """True once MMS listens; False when stopped, or (the reason in the start-up report) when
        it exited first or did not listen in time."""
        deadline = time.monotonic() + self.config.startup_timeout
        for attempt in range(1, BIND_ATTEMPTS + 1):
            if not self._exited_before_listening(deadline):
                if self.management_socket.exists():
                    return True
                if not self._stopping:
                    self._report(f"the model server did not listen within {self.config.startup_timeout} s")
                return False
            port = self.inference_port
            if port is None or not _port_taken(port):
                self._report(f"the model server stopped before it listened; see {self.log_where}")
                return False
            if attempt == BIND_ATTEMPTS:
                self._report(
                    f"the model server could not bind 127.0.0.1:{port}: another process took that port "
                    f"first, {BIND_ATTEMPTS} times in a row"
                )
                return False
            self.inference_port = free_port(self.config.safe_ports, {self.config.port, port})
            log.warning(
                "another process took port %d before the model server bound it; starting it on %d",
                port,
                self.inference_port,
            )
            self._spawn()
        return False

    def _exited_before_listening(self, deadline: float, poll: float = 0.05) -> bool:
        """Wait until MMS listens on both APIs (it binds the management socket last), stop() is
        called or the deadline passes (False), or MMS exits first (True)."""
        while not (self._stopping or self.management_socket.exists() or time.monotonic() > deadline):
            if self.process is not None and self.process.poll() is not None:
                return True
            time.sleep(poll)
        return False

    def _report(self, reason: str) -> None:
        """`reason` to the start-up report, where serve reads it and stops with it (and, MMS having
        failed rather than a model, with the log's last lines)."""
        self.crashed = True
        tmp = self.startup_report.with_name(f"{self.startup_report.name}.mms")
        tmp.write_text(reason + "\n")
        os.replace(tmp, self.startup_report)

    def listening(self) -> bool:
        """MMS has bound its APIs (the management socket appears last)."""
        return not self._starting and self.management_socket.exists() and self.alive()

    def manage(self, method: str, path: str, timeout: float = 10) -> tuple[int, str]:
        """One call to MMS's management API: (status, body). OSError or HTTPException when it does
        not answer."""
        conn = UnixHTTPConnection(self.management_socket, timeout=timeout)
        try:
            conn.request(method, path)
            resp = conn.getresponse()
            return resp.status, resp.read().decode(errors="replace")
        finally:
            conn.close()

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
            try:
                status, body = self.manage("POST", f"/models?{query}")
            except (OSError, http.client.HTTPException):
                time.sleep(poll)
                continue
            if status < 300 or status == 409:  # 409: an earlier attempt that timed out got through
                log.debug("model registered: %s", body.strip())
                return
            self._report(f"the model server refused the model: HTTP {status} {' '.join(body.split())[:300]}")
            return

    def alive(self) -> bool:
        """MMS runs, or is being started (again, on another port)."""
        return self._starting or (self.process is not None and self.process.poll() is None)

    def worker_pids(self) -> frozenset[int]:
        """The live processes among the model server's that hold a model. multi-model-server 1.1.11
        starts one model_service_worker listener, which forks one child per worker (the one that loads
        the model and answers); a killed child lingers as a zombie until the listener forks again."""
        if self.process is None:
            return frozenset()
        try:
            descendants = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.Error:
            return frozenset()
        parents: dict[int, int] = {}
        for proc in descendants:
            try:
                if proc.status() != psutil.STATUS_ZOMBIE and any(WORKER_SCRIPT in arg for arg in proc.cmdline()):
                    parents[proc.pid] = proc.ppid()
            except psutil.Error:  # it ended while we looked
                continue
        return frozenset(pid for pid, parent in parents.items() if parent in parents)

    def connect(self, timeout: float) -> http.client.HTTPConnection:
        """A connected HTTP connection to MMS's inference API (the front's keep-alive connections)."""
        if self.inference_socket is not None:
            conn: http.client.HTTPConnection = UnixHTTPConnection(self.inference_socket, timeout)
            conn.connect()
            return conn
        conn = http.client.HTTPConnection("127.0.0.1", self.inference_port, timeout=timeout)
        conn.connect()
        # Headers and body go out in separate writes: without NODELAY, Nagle's algorithm and the
        # peer's delayed ACK add ~40 ms to each request.
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def probe(self, timeout: float = 2.0, model: str = MODEL_NAME) -> bool:
        """True when a worker of `model` answers a health probe: MMS routed it, the worker process is
        alive and its model is loaded (MMS's own worker status says READY before the model loads)."""
        conn = None
        try:
            conn = self.connect(timeout)
            conn.request("POST", f"/predictions/{model}", b"", {PROBE: "1", CONTENT_TYPE: ""})
            resp = conn.getresponse()
            resp.read()
            return resp.status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            if conn is not None:
                conn.close()

    def stop(self, timeout: float = 5.0) -> None:
        with self._lock:  # no start after this
            self._stopping = True
            process = self.process
        if process is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            try:
                process.wait(timeout)
                break
            except subprocess.TimeoutExpired:
                log.warning("model server did not stop within %.0f s; killing it", timeout)
