"""SageMaker's training contract: the only module that reads /opt/ml and SM_*.

Paths and config files are parsed by sagemaker-training's `environment` module
(which honours SAGEMAKER_BASE_DIR); this module turns them into typed values:
a `Job` (where things are, which hosts take part) and a `TrainConfig` (the
hyperparameters, with command-line overrides applied).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from byoc.core.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_CHECKPOINT_DIR = "/opt/ml/checkpoints"  # SageMaker CheckpointConfig's default LocalPath
MASTER_PORT = 29500
# A stopped job (SIGTERM: spot interruption, StopTrainingJob) exits 128 + SIGTERM after saving a
# checkpoint: stopped, not failed, so no failure file and no success file.
EXIT_STOPPED = 143
# Set by the launcher for torchrun workers: the file a failing worker leaves its reason in.
REASON_ENV = "BYOC_FAILURE_REASON_FILE"


class HyperparameterError(ConfigError):
    """A hyperparameter's value that breaks its rule; `name` (kebab-case) and `rule` let a command
    line say which of its options was wrong (byoc.training.hp_args)."""

    def __init__(self, name: str, shown: str, rule: str) -> None:
        self.name = name.replace("_", "-")
        self.rule = rule
        super().__init__(f"hyperparameter {self.name}={shown} {rule}")


class Optimizer(str, enum.Enum):
    ADAMW = "adamw"
    SGD = "sgd"
    ADAM = "adam"


class Amp(str, enum.Enum):
    """Mixed precision: `auto` measures the candidates on the job's hardware (byoc.training.speed)."""

    AUTO = "auto"
    BF16 = "bf16"
    FP16 = "fp16"
    OFF = "off"


class Switch(str, enum.Enum):
    """A setting that is on, off, or chosen for the hardware (`auto`)."""

    AUTO = "auto"
    ON = "true"
    OFF = "false"

    def resolve(self, auto: bool) -> bool:
        """True or False; `auto` takes the given default."""
        return auto if self is Switch.AUTO else self is Switch.ON


def _choice(enum_type: type[enum.Enum], name: str, value: Any) -> Any:
    """`value` as a member of `enum_type` (members, their values and booleans for switches), else ConfigError."""
    if isinstance(value, enum_type):
        return value
    text = str(value).strip().lower()
    if enum_type is Switch:
        text = {"1": "true", "yes": "true", "on": "true", "0": "false", "no": "false"}.get(text, text)
    try:
        return enum_type(text)
    except ValueError:
        choices = ", ".join(m.value for m in enum_type)
        raise HyperparameterError(name, repr(value), f"is not one of {choices}") from None


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters. Names are kebab-case in SageMaker (`batch-size`); snake_case works too.

    Every instance is valid: values are typed and range-checked when it is made, whichever way
    (`from_dict` for SageMaker's strings, or the constructor); choices become enums."""

    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    optimizer: Optimizer = Optimizer.ADAMW
    arch: str = "resnet50"
    image_size: int = 224
    pretrained: bool = True
    freeze_backbone: bool = False
    augment: bool = True
    seed: int = 42
    num_workers: int = -1  # -1: from the cores and the device (byoc.training.data.num_workers)
    early_stopping_patience: int = 0  # 0: off
    amp: Amp = Amp.AUTO
    channels_last: Switch = Switch.AUTO
    compile: bool = False
    pin_memory: Switch = Switch.AUTO  # auto: on for CUDA
    persistent_workers: bool = True
    profile_steps: int = 0
    checkpoint_dir: str = DEFAULT_CHECKPOINT_DIR
    checkpoint_every: int = 1  # epochs
    processes_per_host: int = 0  # 0: one per GPU, or 1 on a CPU-only host
    log_every: int = 50  # steps: the loss is read back from the device this often
    # An INT8 copy (model.int8.onnx) beside model.onnx, calibrated and checked on the validation
    # images (byoc.core.quantize); model.onnx is exported either way.
    export_int8: bool = True
    # The INT8 copy is dropped when its validation top-1 is more than this many points under fp32's.
    int8_max_drop: float = 1.0

    _MINIMUM: ClassVar[dict[str, int]] = {
        "epochs": 1,
        "batch_size": 1,
        "image_size": 16,
        "num_workers": -1,
        "early_stopping_patience": 0,
        "profile_steps": 0,
        "processes_per_host": 0,
        "checkpoint_every": 1,
        "log_every": 1,
    }

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(f.default, enum.Enum):
                object.__setattr__(self, f.name, _choice(type(f.default), f.name, value))
            elif not isinstance(value, type(f.default)) or (
                isinstance(value, bool) and not isinstance(f.default, bool)
            ):
                if not (isinstance(f.default, float) and isinstance(value, int) and not isinstance(value, bool)):
                    raise HyperparameterError(f.name, repr(value), f"must be {_KIND[type(f.default)]}")
                object.__setattr__(self, f.name, float(value))
        for name, low in self._MINIMUM.items():
            if getattr(self, name) < low:
                raise HyperparameterError(name, str(getattr(self, name)), f"must be >= {low}")
        if not self.lr > 0:
            raise HyperparameterError("lr", str(self.lr), "must be > 0")
        if not 0 <= self.int8_max_drop <= 100:
            raise HyperparameterError("int8_max_drop", str(self.int8_max_drop), "must be within 0..100 (points)")

    @classmethod
    def names(cls) -> list[str]:
        return [f.name.replace("_", "-") for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Typed config from hyperparameters (SageMaker sends every value as a string)."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        unknown = []
        for raw_name, value in values.items():
            if raw_name.startswith(("sagemaker_", "_")):  # SDK / tuning bookkeeping, not ours
                continue
            name = raw_name.replace("-", "_")
            if name not in fields:
                unknown.append(raw_name)
                continue
            default = fields[name].default
            kwargs[name] = value if isinstance(default, enum.Enum) else _coerce(raw_name, value, type(default))
        if unknown:
            raise ConfigError(
                f"unknown hyperparameter(s): {', '.join(sorted(unknown))}. Valid names: {', '.join(cls.names())}"
            )
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Kebab-case names and plain JSON values (enums as their strings)."""
        return {
            k.replace("_", "-"): v.value if isinstance(v, enum.Enum) else v for k, v in dataclasses.asdict(self).items()
        }


_KIND = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _coerce(name: str, value: Any, typ: type) -> Any:
    text = value if isinstance(value, str) else json.dumps(value)
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':  # SDKs sometimes JSON-encode strings twice
        text = text[1:-1]
    try:
        if typ is bool:
            if isinstance(value, bool):
                return value
            low = text.lower()
            if low in ("true", "1", "yes", "on"):
                return True
            if low in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if typ is int:
            number = float(text)
            if number != int(number):
                raise ValueError
            return int(number)
        if typ is float:
            return float(text)
        return text
    except ValueError:
        raise HyperparameterError(name, repr(value), f"must be {_KIND.get(typ, 'a string')}") from None


@dataclass(frozen=True)
class Job:
    """Where the job's inputs and outputs live and which hosts take part."""

    hosts: list[str]
    current_host: str
    network_interface: str
    num_gpus: int
    num_cpus: int
    channels: dict[str, Path]
    model_dir: Path
    output_dir: Path
    output_data_dir: Path
    tensorboard_dir: Path
    checkpoint_dir: Path
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    instance_type: str = "local"

    @classmethod
    def one_host(cls, base: Path, channels: dict[str, Path], num_cpus: int, num_gpus: int = 0) -> Job:
        """A one-host job laid out under `base` as SageMaker lays out /opt/ml (an in-process run: the
        tests, the GPU check), without reading any config file."""
        base = Path(base)
        return cls(
            hosts=["algo-1"],
            current_host="algo-1",
            network_interface="lo",
            num_gpus=num_gpus,
            num_cpus=num_cpus,
            channels=channels,
            model_dir=base / "model",
            output_dir=base / "output",
            output_data_dir=base / "output" / "data",
            tensorboard_dir=base / "output" / "tensorboard",
            checkpoint_dir=base / "checkpoints",
        )

    @property
    def node_rank(self) -> int:
        return self.hosts.index(self.current_host)

    @property
    def master_host(self) -> str:
        return self.hosts[0]

    @property
    def failure_file(self) -> Path:
        """SageMaker's failure file: sagemaker-training writes it from launch's TrainingFailed, nothing else."""
        return self.output_dir / "failure"


def prepare() -> None:
    """Make /opt/ml complete enough for sagemaker-training's `train` to start.

    Must run before the toolkit's trainer: it reads resourceconfig.json before calling
    our entry point, and when that fails its own failure handling cannot write
    /opt/ml/output/failure and exits 0, silently.
    """
    from sagemaker_training import environment

    _ensure_config_files(environment)
    Path(environment.output_data_dir).mkdir(parents=True, exist_ok=True)
    Path(environment.model_dir).mkdir(parents=True, exist_ok=True)


def _ensure_config_files(env_module) -> None:
    """Fill in config files SageMaker would have written, for runs outside SageMaker.

    On SageMaker all three exist. On EC2 or a laptop (`docker run ... train`) they may
    not: then the job is one host named after this machine, channels are the folders
    present under input/data, and hyperparameters come from the command line.
    """
    config_dir = Path(env_module.input_config_dir)
    config_dir.mkdir(parents=True, exist_ok=True)
    defaults: dict[str, Any] = {}
    if not Path(env_module.resource_config_file_dir).exists():
        host = socket.gethostname()
        defaults[env_module.resource_config_file_dir] = {"current_host": host, "hosts": [host]}
    if not Path(env_module.input_data_config_file_dir).exists():
        data_dir = Path(env_module.input_dir) / "data"
        channels = sorted(p.name for p in data_dir.iterdir() if p.is_dir()) if data_dir.is_dir() else []
        defaults[env_module.input_data_config_file_dir] = {c: {"TrainingInputMode": "File"} for c in channels}
    if not Path(env_module.hyperparameters_file_dir).exists():
        defaults[env_module.hyperparameters_file_dir] = {}
    for path, doc in defaults.items():
        log.info("no %s: using %s", path, json.dumps(doc))
        Path(path).write_text(json.dumps(doc))


def load(argv: list[str] | None = None) -> tuple[Job, TrainConfig]:
    """Read the SageMaker environment, apply command-line overrides, validate."""
    from sagemaker_training import environment

    _ensure_config_files(environment)
    try:
        env = environment.Environment()
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"cannot read SageMaker config under {environment.input_config_dir}: {exc}") from exc

    hyperparameters = dict(env.hyperparameters)
    from byoc.training import hp_args  # it reads TrainConfig from here

    overrides = hp_args.parse_argv(list(argv or []))
    hyperparameters.update(overrides)
    config = TrainConfig.from_dict(hyperparameters)

    pipes = sorted(
        name
        for name, c in env.input_data_config.items()
        if isinstance(c, dict) and c.get("TrainingInputMode") == "Pipe"
    )
    if pipes:
        raise ConfigError(
            f"channel(s) {', '.join(pipes)} use Pipe input mode, which streams records, not image files. "
            "Use TrainingInputMode File or FastFile."
        )
    if env.current_host not in env.hosts:
        raise ConfigError(f"resourceconfig.json: current_host {env.current_host!r} is not in hosts {env.hosts}")
    checkpoint_dir = Path(config.checkpoint_dir)
    if config.checkpoint_dir == DEFAULT_CHECKPOINT_DIR:
        checkpoint_dir = Path(environment.base_dir) / "checkpoints"
    job = Job(
        hosts=sorted(env.hosts),
        current_host=env.current_host,
        network_interface=env.network_interface_name,
        num_gpus=int(env.num_gpus),
        num_cpus=int(env.num_cpus),
        channels={name: Path(path) for name, path in env.channel_input_dirs.items()},
        model_dir=Path(env.model_dir),
        output_dir=Path(env.output_dir),
        output_data_dir=Path(env.output_data_dir),
        tensorboard_dir=Path(env.output_dir) / "tensorboard",
        checkpoint_dir=checkpoint_dir,
        hyperparameters=hyperparameters,
        instance_type=env.current_instance_type,
    )
    return job, config


def hand_over(reason: str) -> None:
    """Leave a torchrun worker's failure reason for the launcher (`REASON_ENV`), which alone reports
    it to SageMaker. The first worker to fail wins: its reason is the real one, the others'
    are usually the collective it broke."""
    path = os.environ.get(REASON_ENV)
    if not path:
        return
    try:
        with open(path, "x") as fh:
            fh.write(reason)
    except FileExistsError:
        pass
    except OSError as exc:
        log.error("could not hand the failure reason over through %s: %s", path, exc)


def handed_over(path: Path) -> str | None:
    """The reason a worker left in `path`, if any."""
    try:
        return Path(path).read_text().strip() or None
    except OSError:
        return None


def torchrun_env() -> dict[str, int]:
    """RANK / WORLD_SIZE / LOCAL_RANK as torchrun sets them (one process: 0, 1, 0)."""
    return {
        "rank": int(os.environ.get("RANK", 0)),
        "world_size": int(os.environ.get("WORLD_SIZE", 1)),
        "local_rank": int(os.environ.get("LOCAL_RANK", 0)),
    }
