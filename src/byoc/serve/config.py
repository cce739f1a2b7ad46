"""Serving settings: one source each (an environment variable), a default that works,
read by the server and, through the environment it passes on, by every worker."""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from types import ModuleType

from byoc.core.errors import ConfigError

DEFAULT_MAX_PAYLOAD_MB = 6  # SageMaker real-time endpoints' request limit
BATCH_MAX_PAYLOAD_MB = 100  # batch transform's largest MaxPayloadInMB
MAX_PAYLOAD_MB = 1024  # asynchronous inference's request limit (1 GB): the largest anywhere
DEFAULT_TIMEOUT_S = 60
# Batch transform's longest invocation timeout (ModelClientConfig.InvocationsTimeoutInSeconds):
# the default per-request timeout under SAGEMAKER_BATCH=true, where one request holds many images.
BATCH_TIMEOUT_S = 3600
MB = 1024 * 1024
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000  # 40 MP: ~120 MB decoded RGB, fits any endpoint
DEFAULT_TOP_K = 5
# At most this many requests per forward pass, grouped by the front from those waiting for a
# busy worker (byoc.serve.batching); 1 = never group. Unset: byoc.serve.sizing.batch_size (4 on the
# CPU, more on a GPU).
# How long a free worker waits for more requests to fill a batch; 0: it takes only what already waits.
DEFAULT_MAX_BATCH_DELAY_MS = 0
# Each model worker logs its per-stage request times at most this often (one JSON line); 0: every call.
DEFAULT_METRICS_INTERVAL_S = 60
MODEL_DIR_ENV = "BYOC_MODEL_DIR"
MODEL_SERVER_LOG_ENV = "BYOC_MODEL_SERVER_LOG"
TO_STDERR = "-"  # BYOC_MODEL_SERVER_LOG's value for the container's stderr (`byoc local serve --verbose`)
THREADS_ENV = "BYOC_TORCH_THREADS"
# What SageMaker batch transform sets in the container (from CreateTransformJob), as the
# sagemaker-inference toolkit does not name them.
BATCH_ENV = "SAGEMAKER_BATCH"
BATCH_STRATEGY_ENV = "SAGEMAKER_BATCH_STRATEGY"
MAX_CONCURRENT_TRANSFORMS_ENV = "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS"
# A multi-model endpoint's container: SageMaker loads and unloads models through /models (byoc.serve.models).
MULTI_MODEL_ENV = "SAGEMAKER_MULTI_MODEL"
MAX_LOADED_MODELS_ENV = "BYOC_MAX_LOADED_MODELS"
# true/false: serverless sizing on or off whatever the cgroup memory limit (unset: detected from it).
SERVERLESS_ENV = "BYOC_SERVERLESS"
SERVERLESS_MAX_PAYLOAD_MB = 4  # SageMaker Serverless Inference's request limit
# int8 / fp32: which ONNX copy an image without torch serves (unset: the INT8 copy when there is one);
# fp32 also keeps a GPU worker in fp32 (unset: half precision where byoc.serve.gpu allows it).
PRECISION_ENV = "BYOC_PRECISION"


@dataclass(frozen=True)
class Setting:
    """One environment variable `ServeConfig.from_env` reads, as the documentation describes it: the
    ServeConfig field it sets (its default is that field's value with nothing set) and what it means.
    `default` overrides the shown default where the field's value is not how the variable is written."""

    env: str
    field: str | None
    meaning: str
    default: str | None = None


# Every variable from_env reads, in the order a reader needs them (tests/test_docs_reference.py checks
# the list against what from_env reads). The settings reference page is generated from it.
SETTINGS: tuple[Setting, ...] = (
    Setting(
        "SAGEMAKER_BIND_TO_PORT",
        "port",
        "the port the server listens on; 0: the OS picks one (the ready line names it)",
    ),
    Setting("BYOC_BIND_HOST", "bind_host", "the address the server listens on (`byoc local serve` sets 127.0.0.1)"),
    Setting(
        "SAGEMAKER_BASE_DIR",
        None,
        "SageMaker's base folder: the model is under model/, a multi-model endpoint's under models/",
        "/opt/ml",
    ),
    Setting(
        "BYOC_MODEL_DIR",
        "model_dir",
        "the model folder (model.json and the weights), when not under SAGEMAKER_BASE_DIR",
    ),
    Setting(
        "SAGEMAKER_MODEL_SERVER_WORKERS",
        "workers",
        "model worker processes; unset: from the cores, the GPUs and the model's size",
    ),
    Setting(
        "BYOC_TORCH_THREADS",
        "torch_threads",
        "threads per model worker (torch or ONNX Runtime); unset: cores / workers",
    ),
    Setting(
        "SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS",
        "timeout",
        "seconds a request may take; wins over SAGEMAKER_MODEL_SERVER_TIMEOUT",
    ),
    Setting(
        "SAGEMAKER_MODEL_SERVER_TIMEOUT",
        "timeout",
        f"seconds a request may take ({BATCH_TIMEOUT_S} under SAGEMAKER_BATCH=true)",
    ),
    Setting("SAGEMAKER_STARTUP_TIMEOUT", "startup_timeout", "seconds the first worker may take to load the model"),
    Setting(
        "SAGEMAKER_MAX_PAYLOAD_IN_MB",
        "max_payload_mb",
        f"the request body limit in MB, at most {MAX_PAYLOAD_MB} ({BATCH_MAX_PAYLOAD_MB} under SAGEMAKER_BATCH=true); "
        f"unset: {DEFAULT_MAX_PAYLOAD_MB}, {SERVERLESS_MAX_PAYLOAD_MB} on serverless, "
        "what memory allows under batch transform",
    ),
    Setting("BYOC_MAX_IMAGE_PIXELS", "max_image_pixels", "the largest image accepted, in pixels (width x height)"),
    Setting("BYOC_TOP_K", "top_k", "how many classes an answer lists, unless the request asks for another number"),
    Setting(
        "BYOC_BATCH_SIZE",
        "batch_size",
        "at most this many waiting requests in one forward pass; 1: never grouped; unset: 4 on a CPU, more on a GPU",
    ),
    Setting(
        "BYOC_MAX_BATCH_DELAY_MS",
        "max_batch_delay_ms",
        "milliseconds a free worker waits for more requests to fill a batch; 0: it takes only those waiting",
    ),
    Setting(
        "BYOC_PRECISION",
        "precision",
        "int8 or fp32: the ONNX copy an image without torch serves, and fp32 keeps a GPU worker in fp32; "
        "unset: INT8 when the model has it, half precision on a GPU where the model allows it",
    ),
    Setting(
        "SAGEMAKER_MODEL_SERVER_VMARGS",
        "vmargs",
        "the model server's JVM options; unset: sized from the container's memory",
    ),
    Setting("BYOC_ACCESS_LOG", "access_log", "1: one log line per request", "0"),
    Setting(
        "BYOC_MODEL_SERVER_LOG",
        "model_server_log",
        "where the model server's own log goes: a file, or - for the container's stderr; unset: a file in the"
        " server's work dir (the lines that matter reach stderr either way)",
    ),
    Setting(
        "BYOC_METRICS_INTERVAL_S",
        "metrics_interval_s",
        "seconds between each worker's per-stage timing line; 0: after every request",
    ),
    Setting(
        "SAGEMAKER_SAFE_PORT_RANGE",
        "safe_ports",
        "FIRST-LAST: where the model server's internal ports may go (SageMaker sets it)",
    ),
    Setting("SAGEMAKER_BATCH", "batch", "true in a batch transform job (SageMaker sets it)"),
    Setting(
        "SAGEMAKER_BATCH_STRATEGY",
        "batch_strategy",
        "MULTI_RECORD or SINGLE_RECORD, as GET /execution-parameters answers; unset: MULTI_RECORD",
    ),
    Setting(
        "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS",
        "max_concurrent_transforms",
        "parallel requests batch transform may send; unset: one per model worker",
    ),
    Setting(
        "SAGEMAKER_MULTI_MODEL",
        "multi_model",
        "true on a multi-model endpoint: models load on request from SAGEMAKER_BASE_DIR/models",
    ),
    Setting(
        "BYOC_MAX_LOADED_MODELS",
        "max_loaded_models",
        "a multi-model endpoint's most models in memory at once; unset: as many as memory allows",
    ),
    Setting(
        "BYOC_SERVERLESS",
        "serverless",
        "true or false: serverless sizing on or off; unset: on when the memory limit is a serverless size",
    ),
)


class BatchStrategy(enum.Enum):
    """How batch transform groups records into a request (`BatchStrategy` in GET /execution-parameters)."""

    MULTI_RECORD = "MULTI_RECORD"  # as many records as fit in MaxPayloadInMB
    SINGLE_RECORD = "SINGLE_RECORD"  # one record per request


class Precision(enum.Enum):
    """Which copy an image without torch serves, and whether a GPU worker stays in fp32 (BYOC_PRECISION)."""

    INT8 = "int8"  # model.int8.onnx, quantized and checked by byoc.core.quantize
    FP32 = "fp32"  # model.onnx; with torch, TorchScript in fp32 on a GPU too


@dataclass(frozen=True)
class ExecutionParameters:
    """The answer to batch transform's GET /execution-parameters."""

    max_concurrent_transforms: int
    batch_strategy: BatchStrategy
    max_payload_mb: int

    def document(self) -> dict:
        return {
            "MaxConcurrentTransforms": self.max_concurrent_transforms,
            "BatchStrategy": self.batch_strategy.value,
            "MaxPayloadInMB": self.max_payload_mb,
        }


@dataclass(frozen=True)
class PortRange:
    """TCP ports first..last, both included."""

    first: int
    last: int

    def __post_init__(self) -> None:
        if not 1 <= self.first <= self.last <= 65535:
            raise ConfigError(f"port range {self.first}-{self.last} must have 1 <= FIRST <= LAST <= 65535")

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.first <= port <= self.last

    def __str__(self) -> str:
        return f"{self.first}-{self.last}"

    def intersect(self, other: PortRange) -> PortRange | None:
        first, last = max(self.first, other.first), min(self.last, other.last)
        return PortRange(first, last) if first <= last else None


def _port_range(env: Mapping[str, str], name: str) -> PortRange | None:
    """The variable as FIRST-LAST (SageMaker's format for SAGEMAKER_SAFE_PORT_RANGE); None when unset or blank."""
    raw = env.get(name, "").strip()
    if not raw:
        return None
    match = re.fullmatch(r"([0-9]{1,5})\s*-\s*([0-9]{1,5})", raw)
    first, last = (int(match[1]), int(match[2])) if match else (0, 0)
    if not 1 <= first <= last <= 65535:
        raise ConfigError(f"{name}={raw!r} must be FIRST-LAST (e.g. 9000-9999) with 1 <= FIRST <= LAST <= 65535")
    return PortRange(first, last)


def _optional_int(env: Mapping[str, str], name: str, minimum: int = 1) -> int | None:
    """The variable as an integer >= minimum; None when unset or blank."""
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} must be an integer") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} must be >= {minimum}")
    return value


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    """The variable as an integer >= minimum, `default` when unset or blank."""
    value = _optional_int(env, name, minimum)
    return default if value is None else value


def _bool(env: Mapping[str, str], name: str) -> bool:
    """The variable as true or false (any case); false when unset or blank."""
    raw = env.get(name, "").strip()
    if raw.lower() not in ("", "true", "false"):
        raise ConfigError(f"{name}={raw!r} must be true or false")
    return raw.lower() == "true"


def _batch_strategy(env: Mapping[str, str]) -> BatchStrategy | None:
    """SAGEMAKER_BATCH_STRATEGY in any case, spelled as /execution-parameters spells it (MULTI_RECORD)
    or as CreateTransformJob does (MultiRecord); None when unset or blank."""
    raw = env.get(BATCH_STRATEGY_ENV, "").strip()
    if not raw:
        return None
    for strategy in BatchStrategy:
        if raw.upper().replace("_", "") == strategy.value.replace("_", ""):
            return strategy
    raise ConfigError(f"{BATCH_STRATEGY_ENV}={raw!r} must be MULTI_RECORD or SINGLE_RECORD")


def read_precision(env: Mapping[str, str]) -> Precision | None:
    """BYOC_PRECISION as int8 or fp32 (any case); None when unset or blank."""
    raw = env.get(PRECISION_ENV, "").strip()
    if not raw:
        return None
    try:
        return Precision(raw.lower())
    except ValueError:
        raise ConfigError(
            f"{PRECISION_ENV}={raw!r} must be int8 or fp32 (or unset: int8 when the model has it, "
            "half precision on a GPU where model.json allows it)"
        ) from None


def _sm() -> ModuleType:
    """SageMaker hosting's variable names (sagemaker-inference, in the serving images), imported when the
    settings are read: the runtimes import this module and run with torch alone (bench/gpu_check.py)."""
    from sagemaker_inference import parameters

    return parameters


def _payload_mb(env: Mapping[str, str], batch: bool) -> int | None:
    """SAGEMAKER_MAX_PAYLOAD_IN_MB within what the platform allows: batch transform's 100, else
    asynchronous inference's 1024 (real-time's own 6 is enforced by SageMaker, not here)."""
    sm = _sm()
    mb = _optional_int(env, sm.MAX_REQUEST_SIZE)
    if mb is not None and batch and mb > BATCH_MAX_PAYLOAD_MB:
        raise ConfigError(
            f"{sm.MAX_REQUEST_SIZE}={mb} is over {BATCH_MAX_PAYLOAD_MB}, batch transform's limit ({BATCH_ENV}=true)"
        )
    if mb is not None and mb > MAX_PAYLOAD_MB:
        raise ConfigError(f"{sm.MAX_REQUEST_SIZE}={mb} is over {MAX_PAYLOAD_MB}, asynchronous inference's limit (1 GB)")
    return mb


@dataclass(frozen=True)
class ServeConfig:
    model_dir: Path
    port: int = 8080
    bind_host: str = "0.0.0.0"  # SageMaker reaches the container from outside; tests use 127.0.0.1
    workers: int | None = None  # None: from cores, GPUs and model size (byoc.serve.sizing)
    torch_threads: int | None = None  # None: cores / workers
    timeout: int = DEFAULT_TIMEOUT_S  # seconds per request
    startup_timeout: int = 600  # seconds for the first worker to load the model
    # SAGEMAKER_MAX_PAYLOAD_IN_MB; None: unset (the body limit is then DEFAULT_MAX_PAYLOAD_MB, or
    # under SAGEMAKER_BATCH what the machine allows: `for_machine`).
    max_payload_mb: int | None = None
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    top_k: int = DEFAULT_TOP_K
    batch_size: int | None = None  # BYOC_BATCH_SIZE; None: byoc.serve.sizing.batch_size
    max_batch_delay_ms: int = DEFAULT_MAX_BATCH_DELAY_MS
    vmargs: str | None = None  # SAGEMAKER_MODEL_SERVER_VMARGS; None: sized by byoc.serve.mms
    access_log: bool = False  # one model-server log line per request
    # BYOC_MODEL_SERVER_LOG: where multi-model-server's own log goes (its Java frontend, the JVM, the
    # workers' output): a file, or "-" for the container's stderr; None: a file in serve's work dir.
    # With a file, the lines that matter still reach stderr (byoc.serve.mms.passed_on).
    model_server_log: str | None = None
    metrics_interval_s: int = DEFAULT_METRICS_INTERVAL_S
    # Where the model server's internal TCP ports may go (SageMaker sets it for multi-model
    # endpoints and others); None: anywhere byoc.serve.mms allows.
    safe_ports: PortRange | None = None
    batch: bool = False  # SAGEMAKER_BATCH: a batch transform job, not an endpoint
    batch_strategy: BatchStrategy | None = None  # None: MULTI_RECORD
    max_concurrent_transforms: int | None = None  # None: one per model worker
    multi_model: bool = False  # SAGEMAKER_MULTI_MODEL: models loaded on request under models_dir
    models_dir: Path = Path("/opt/ml/models")  # where SageMaker puts a multi-model endpoint's models
    max_loaded_models: int | None = None  # None: as many as memory allows (507 past that)
    serverless: bool | None = None  # BYOC_SERVERLESS; None: a serverless-sized memory limit decides (sizing.serverless)
    # BYOC_PRECISION; None: the INT8 copy when the model has one, else fp32 (images without torch);
    # with torch, fp32 on the CPU and half precision on a GPU where byoc.serve.gpu allows it
    precision: Precision | None = None

    @property
    def max_request_bytes(self) -> int:
        """The request body limit."""
        return (self.max_payload_mb or DEFAULT_MAX_PAYLOAD_MB) * MB

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, model_dir: str | Path | None = None) -> ServeConfig:
        """SageMaker's variables (SAGEMAKER_*, named as sagemaker-inference names them) plus byoc's own (BYOC_*)."""
        env = os.environ if env is None else env
        sm = _sm()
        base = env.get(sm.BASE_PATH_ENV, "/opt/ml")
        model_dir = model_dir or env.get(MODEL_DIR_ENV) or os.path.join(base, "model")
        batch = _bool(env, BATCH_ENV)
        # The newer SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS wins over SAGEMAKER_MODEL_SERVER_TIMEOUT.
        timeout = _optional_int(env, sm.MODEL_SERVER_TIMEOUT_SECONDS_ENV) or _int(
            env, sm.MODEL_SERVER_TIMEOUT_ENV, BATCH_TIMEOUT_S if batch else DEFAULT_TIMEOUT_S
        )
        return cls(
            model_dir=Path(model_dir),
            port=_int(env, sm.BIND_TO_PORT_ENV, 8080, minimum=0),  # 0: the OS picks; the ready line names it
            bind_host=env.get("BYOC_BIND_HOST", "").strip() or cls.bind_host,
            workers=_optional_int(env, sm.MODEL_SERVER_WORKERS_ENV),
            torch_threads=_optional_int(env, THREADS_ENV),
            timeout=timeout,
            startup_timeout=_int(env, sm.STARTUP_TIMEOUT_ENV, 600),
            max_payload_mb=_payload_mb(env, batch),
            max_image_pixels=_int(env, "BYOC_MAX_IMAGE_PIXELS", DEFAULT_MAX_IMAGE_PIXELS),
            top_k=_int(env, "BYOC_TOP_K", DEFAULT_TOP_K),
            batch_size=_optional_int(env, "BYOC_BATCH_SIZE"),
            max_batch_delay_ms=_int(env, "BYOC_MAX_BATCH_DELAY_MS", DEFAULT_MAX_BATCH_DELAY_MS, minimum=0),
            vmargs=env.get(sm.MODEL_SERVER_VMARGS, "").strip() or None,
            access_log=_int(env, "BYOC_ACCESS_LOG", 0, minimum=0) > 0,
            model_server_log=env.get(MODEL_SERVER_LOG_ENV, "").strip() or None,
            metrics_interval_s=_int(env, "BYOC_METRICS_INTERVAL_S", DEFAULT_METRICS_INTERVAL_S, minimum=0),
            safe_ports=_port_range(env, sm.SAFE_PORT_RANGE_ENV),
            batch=batch,
            batch_strategy=_batch_strategy(env),
            max_concurrent_transforms=_optional_int(env, MAX_CONCURRENT_TRANSFORMS_ENV),
            multi_model=_bool(env, MULTI_MODEL_ENV),
            models_dir=Path(base, "models"),
            max_loaded_models=_optional_int(env, MAX_LOADED_MODELS_ENV),
            serverless=_bool(env, SERVERLESS_ENV) if env.get(SERVERLESS_ENV, "").strip() else None,
            precision=read_precision(env),
        )

    def for_machine(self, machine_payload_mb: int) -> ServeConfig:
        """This config with the body limit settled: SAGEMAKER_MAX_PAYLOAD_IN_MB when set; else, under
        SAGEMAKER_BATCH, `machine_payload_mb` (what memory allows, byoc.serve.sizing.payload_mb), so
        that what /execution-parameters tells batch transform is accepted; else real-time's 6."""
        if self.max_payload_mb is not None or not self.batch:
            return self
        return replace(self, max_payload_mb=max(1, min(machine_payload_mb, BATCH_MAX_PAYLOAD_MB)))

    def for_serverless(self) -> ServeConfig:
        """This config on a serverless-sized container: the body limit is serverless' 4 MB unless
        SAGEMAKER_MAX_PAYLOAD_IN_MB says otherwise (SageMaker sets it to 4 there anyway)."""
        return replace(self, max_payload_mb=self.max_payload_mb or SERVERLESS_MAX_PAYLOAD_MB, serverless=True)

    def execution_parameters(self, workers: int, machine_payload_mb: int) -> ExecutionParameters:
        """What GET /execution-parameters answers: the SAGEMAKER_* variables where set; else one
        transform per model worker, MULTI_RECORD, and what memory allows (`machine_payload_mb`) but
        never more than the body limit (real-time's 6 MB outside SAGEMAKER_BATCH)."""
        payload_mb = self.max_payload_mb or max(1, min(machine_payload_mb, self.max_request_bytes // MB))
        return ExecutionParameters(
            max_concurrent_transforms=self.max_concurrent_transforms or workers,
            batch_strategy=self.batch_strategy or BatchStrategy.MULTI_RECORD,
            max_payload_mb=payload_mb,
        )

    def describe(self) -> dict:
        described = {f.name: _described(getattr(self, f.name)) for f in fields(self)}
        return {**described, "max_request_bytes": str(self.max_request_bytes)}


def _described(value: object) -> str:
    """A setting as the config log line shows it: an enum by its value ("int8", not "Precision.INT8")."""
    return str(value.value if isinstance(value, enum.Enum) else value)
