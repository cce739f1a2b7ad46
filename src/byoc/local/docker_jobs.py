"""`byoc local train | serve | predict | smoke`: the images on this machine, as SageMaker runs them.

`train` lays out /opt/ml for each host (byoc.local.opt_ml), starts one container per host
(algo-1..N, DDP across them as on SageMaker), prints their logs behind the host's name, turns
Ctrl-C into SIGTERM for every container (the job saves a checkpoint and exits 143; the same
command with the same --checkpoints resumes) and exits with the job's exit code and reason.
`serve` runs the serving image on a model folder until Ctrl-C, the folder checked here first by
the image's own check, the container's log shown with --verbose (else its reason or its last lines
when it fails); `predict` posts images to a served model. The Docker side is byoc.local.containers;
nothing here imports torch.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from byoc.core.cli_kit import ranks
from byoc.core.errors import ArtifactError, ByocError, ConfigError
from byoc.local import containers as dc
from byoc.local import opt_ml
from byoc.serve import config as serve_config
from byoc.serve.config import MODEL_SERVER_LOG_ENV, TO_STDERR
from byoc.training import hp_args

if TYPE_CHECKING:
    from docker.client import DockerClient
    from docker.models.containers import Container

TRAIN_IMAGE = "byoc-train:latest"
SERVE_IMAGE = "byoc-serve:latest"
SERVE_PORT = 8080  # the port SageMaker's hosting contract serves on inside the container
EXIT_STOPPED = 143  # byoc.training.contract.EXIT_STOPPED: stopped by SIGTERM after saving a checkpoint
READY_TIMEOUT = 300.0
STOP_TIMEOUT = 30  # seconds between SIGTERM and SIGKILL, as SageMaker gives a serving container
TAIL_LINES = 20  # of a serving container's log, shown when it fails (all of it with --verbose)
CONTENT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}


def say(message: str) -> None:
    print(message, flush=True)


def _pair(text: str) -> tuple[str, str]:
    name, eq, value = text.partition("=")
    if not eq or not name.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: use NAME=VALUE")
    return name.strip(), value


def _typed(parse):
    """An argparse type from one of containers' parsers (their ConfigError becomes a usage error)."""

    def convert(text: str):
        try:
            return parse(text)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__
    return convert


# ---- train -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainSpec:
    data: Path
    output: Path
    hyperparameters: dict[str, str] = field(default_factory=dict)
    hosts: int = 1
    gpus: str = "auto"
    checkpoints: Path | None = None  # default: OUTPUT/checkpoints
    image: str = TRAIN_IMAGE
    shm_size: str | None = None  # default: containers.shm_size
    network: dc.Network = dc.Network.AUTO
    weights: Path | None = None  # a pretrained weights file, the job's `weights` channel

    def __post_init__(self) -> None:
        if self.weights is not None and not self.weights.is_file():
            raise ConfigError(f"--weights {self.weights}: no such file")
        if self.hosts < 1:
            raise ConfigError(f"--hosts {self.hosts}: must be 1 or more")
        if self.network is dc.Network.NONE and self.hosts > 1:
            raise ConfigError("--network none leaves the hosts unable to reach each other: use bridge or host")

    @property
    def checkpoint_dir(self) -> Path:
        return (self.checkpoints or self.output / "checkpoints").resolve()


@dataclass(frozen=True)
class TrainResult:
    exit_code: int
    codes: dict[str, int]
    reason: str | None
    seconds: float
    model_dir: Path
    stopped: bool  # by a signal to this process

    @property
    def outcome(self) -> str:
        if self.exit_code == 0:
            return "completed"
        return "stopped" if self.exit_code == EXIT_STOPPED else "failed"


def train(spec: TrainSpec, follower: dc.LogFollower | None = None) -> TrainResult:
    """Run the training job to its end (or until a signal stops it) and say how it ended."""
    opt_ml.check_data(spec.data)
    client = dc.engine()
    dc.require_image(client, spec.image)
    gpus = dc.resolve_gpus(client, spec.gpus)
    network = dc.resolve_network(client, spec.network)
    hosts = opt_ml.host_names(spec.hosts)
    shares = dc.split_gpus(gpus, len(hosts))
    job = f"byoc-local-{uuid.uuid4().hex[:8]}"
    say(f"== job {job}: {len(hosts)} host(s) on network {network.value}; {gpus.description}")
    output = spec.output.resolve()
    for stale in (output / "model", output / "output", output / "hosts"):  # a job starts with them empty
        dc.remove_tree(client, spec.image, stale)
    spec.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    interface = "eth0" if network is dc.Network.BRIDGE else "lo"
    dirs = opt_ml.lay_out(output, hosts, spec.hyperparameters, interface, weights=spec.weights is not None)
    follower = follower or dc.LogFollower()
    started = time.monotonic()
    with dc.job_network(client, network, job) as network_name:
        running = [
            _start_host(client, spec, job, d, hosts, share, network, network_name, follower)
            for d, share in zip(dirs, shares, strict=True)
        ]
        try:
            codes, stopped = _wait_job(running, hosts)
        finally:
            follower.join()
            for container in running:
                dc.remove(container)
    return TrainResult(
        exit_code=_job_code(codes, hosts),
        codes=codes,
        reason=_failure_reason(dirs),
        seconds=time.monotonic() - started,
        model_dir=output / "model",
        stopped=stopped,
    )


def _start_host(
    client: DockerClient,
    spec: TrainSpec,
    job: str,
    dirs: opt_ml.HostDirs,
    hosts: list[str],
    gpus: dc.Gpus,
    network: dc.Network,
    network_name: str | None,
    follower: dc.LogFollower,
) -> Container:
    """One host's container, started, its log followed."""
    options: dict[str, Any] = {
        "name": f"{job}-{dirs.host}",
        "hostname": dirs.host,
        "labels": {dc.LABEL: job},
        "volumes": dirs.volumes(
            spec.data.resolve(), spec.checkpoint_dir, spec.weights.resolve() if spec.weights else None
        ),
        "shm_size": spec.shm_size or dc.shm_size(client, len(hosts)),
        "device_requests": gpus.requests,
        "environment": {"TRAINING_JOB_NAME": job},
    }
    if network is dc.Network.BRIDGE:
        # Each host is known by its SageMaker name on the job's own network.
        options["network"] = network_name
        options["networking_config"] = {network_name: client.api.create_endpoint_config(aliases=[dirs.host])}
    else:
        options["network_mode"] = network.value
        options["extra_hosts"] = {h: "127.0.0.1" for h in hosts}  # every host is this machine
    container = dc.start(client, spec.image, ["train"], **options)
    follower.follow(container, dirs.host)
    return container


def _wait_job(running: list[Container], hosts: list[str]) -> tuple[dict[str, int], bool]:
    """Every host's exit code. A signal to this process becomes SIGTERM to every container (a
    second one, SIGKILL); a host that fails stops the others, as a SageMaker job fails as a whole."""
    by_host = dict(zip(hosts, running, strict=True))
    codes: dict[str, int] = {}
    stopped = False

    def forward(_signum: int, count: int) -> None:
        nonlocal stopped
        stopped = True
        kill = "SIGTERM" if count == 1 else "SIGKILL"
        say(
            f"== {kill} to {', '.join(h for h in hosts if h not in codes)}"
            + (": saving a checkpoint (Ctrl-C again to kill)" if count == 1 else "")
        )
        _signal_all(by_host, codes, kill)

    with dc.signals_forwarded(forward):
        while len(codes) < len(hosts):
            for host, container in by_host.items():
                if host not in codes and (code := dc.exit_code(container)) is not None:
                    codes[host] = code
                    if code not in (0, EXIT_STOPPED) and not stopped and len(codes) < len(hosts):
                        say(f"== {host} exited {code}: stopping the other hosts")
                        _signal_all(by_host, codes, "SIGTERM")
            time.sleep(0.5)
    return codes, stopped


def _signal_all(by_host: dict[str, Container], codes: dict[str, int], kill: str) -> None:
    import docker.errors

    for host, container in by_host.items():
        if host not in codes:
            with suppress(docker.errors.APIError):  # it may have just exited
                container.kill(signal=kill)


def _job_code(codes: dict[str, int], hosts: list[str]) -> int:
    """A failure anywhere is the job's; then a stop; else 0."""
    failed = [codes[h] for h in hosts if codes[h] not in (0, EXIT_STOPPED)]
    if failed:
        return failed[0]
    return EXIT_STOPPED if EXIT_STOPPED in codes.values() else 0


def _failure_reason(dirs: list[opt_ml.HostDirs]) -> str | None:
    """The first host's output/failure, as SageMaker reports it for the job."""
    for d in dirs:
        path = d.output / "failure"
        if path.is_file() and path.read_text().strip():
            return path.read_text().strip()
    return None


def report_training(result: TrainResult, spec: TrainSpec) -> None:
    say(f"== {result.outcome} (exit {result.exit_code}) in {result.seconds:.0f} s")
    if result.exit_code == 0:
        say(f"model: {result.model_dir}  metrics: {spec.output.resolve() / 'output' / 'data' / 'metrics.json'}")
    elif result.outcome == "stopped":
        say(f"checkpoint in {spec.checkpoint_dir}: the same command resumes from it")
    if result.reason:
        print(f"failure reason: {result.reason.splitlines()[0]}", file=sys.stderr, flush=True)


# ---- serve -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServeSpec:
    model_dir: Path
    port: int = SERVE_PORT  # on 127.0.0.1; 0: any free port
    image: str = SERVE_IMAGE
    gpus: str = "auto"
    env: dict[str, str] = field(default_factory=dict)
    network: dc.Network = dc.Network.AUTO
    ready_timeout: float = READY_TIMEOUT
    name: str | None = None  # the container's (default byoc-local-serve-<random>)
    # The container's whole log as it comes, the model server's own included (to the container's
    # stderr: BYOC_MODEL_SERVER_LOG=-); else none of it, but its last lines when it fails.
    verbose: bool = False


@dataclass
class Served:
    """A serving container that answers /ping: its URL and the settings it logged at start."""

    container: Container
    url: str
    config: dict
    follower: dc.LogFollower


@contextmanager
def serving(spec: ServeSpec, quiet: bool = False) -> Iterator[Served]:
    """The model served until the block ends; then SIGTERM, a wait and removal."""
    served = start_serving(spec, quiet)
    try:
        yield served
    finally:
        stop_serving(served)


class BadModelDir(ArtifactError):
    """The model folder fails the serving image's own start-up check; found before any container starts."""

    exit_code = 2


def check_model_dir(model_dir: Path, image: str, env: dict[str, str]) -> None:
    """The check the serving image runs first (byoc.serve.runtimes.load: model.json read by
    byoc.core.model_meta.read_meta, the runtime picked by byoc.serve.choice.choose), run here on the
    host: a bad folder is one line, not a container's log. The runtime is checked for byoc's own
    two images only, whose runtimes are known; any other image checks it itself."""
    if not model_dir.is_dir():
        raise BadModelDir(f"{model_dir}: no such folder (a training job's model/ folder, e.g. OUTPUT/model)")
    if env.get(serve_config.MULTI_MODEL_ENV, "").strip().lower() == "true":
        return  # a multi-model endpoint's container serves no single model: its models come on request
    try:  # model.json's reader brings numpy and Pillow; without them here, the container checks alone
        from byoc.core.model_meta import read_meta
        from byoc.serve import choice
    except ImportError:
        return
    try:
        meta = read_meta(model_dir)
        if image in (choice.TORCH_IMAGE, choice.CPU_IMAGE):
            choice.choose(meta, serve_config.read_precision(env), has_torch=image == choice.TORCH_IMAGE)
    except ByocError as exc:
        raise BadModelDir(str(exc)) from None


def start_serving(spec: ServeSpec, quiet: bool = False) -> Served:
    """Start the serving container and wait until its /ping answers 200."""
    check_model_dir(spec.model_dir, spec.image, spec.env)
    client = dc.engine()
    dc.require_image(client, spec.image)
    gpus = dc.resolve_gpus(client, spec.gpus)
    network = dc.resolve_network(client, spec.network)
    if network is dc.Network.NONE:
        raise ConfigError("--network none: a model nobody can reach; use bridge or host")
    if network is dc.Network.HOST:
        dc.check_port_free(spec.port)
    if not quiet:
        say(gpus.description)
    container = dc.start(client, spec.image, ["serve"], **_serve_options(spec, network, gpus))
    follower = dc.LogFollower(quiet=quiet or not spec.verbose)
    follower.follow(container, "serve")
    try:
        config, port = _await_ready(container, follower, spec.ready_timeout)
        if network is dc.Network.BRIDGE:
            container.reload()
            port = int(container.attrs["NetworkSettings"]["Ports"][f"{SERVE_PORT}/tcp"][0]["HostPort"])
        url = f"http://127.0.0.1:{port}"
        _await_ping(url, container, spec.ready_timeout)
    except BaseException:
        dc.remove(container)
        raise
    return Served(container, url, config, follower)


def _serve_options(spec: ServeSpec, network: dc.Network, gpus: dc.Gpus) -> dict[str, Any]:
    options: dict[str, Any] = {
        "name": spec.name or f"byoc-local-serve-{uuid.uuid4().hex[:8]}",
        "labels": {dc.LABEL: "serve"},
        "volumes": {str(spec.model_dir.resolve()): {"bind": "/opt/ml/model", "mode": "ro"}},
        "device_requests": gpus.requests,
        "environment": dict(spec.env),
    }
    if spec.verbose:
        options["environment"].setdefault(MODEL_SERVER_LOG_ENV, TO_STDERR)
    if network is dc.Network.HOST:
        # The machine's own network: the server binds 127.0.0.1:port itself (0: the OS picks).
        options["network_mode"] = "host"
        options["environment"].update({"SAGEMAKER_BIND_TO_PORT": str(spec.port), "BYOC_BIND_HOST": "127.0.0.1"})
    else:
        options["ports"] = {f"{SERVE_PORT}/tcp": ("127.0.0.1", spec.port or None)}
    return options


def _await_ready(container: Container, follower: dc.LogFollower, timeout: float) -> tuple[dict, int]:
    """The server's `config` settings and the port its `ready` line names."""

    def alive() -> bool:
        return dc.exit_code(container) is None

    try:
        ready = follower.wait_for("serve", lambda line: line.startswith('{"event": "ready"'), timeout, alive)
    except (ByocError, TimeoutError) as exc:
        lines = follower.lines.get("serve", [])
        log = "\n".join(lines[-TAIL_LINES:])
        if dc.PORT_TAKEN.search(log):
            raise dc.PortInUse(
                "the port is in use on 127.0.0.1: choose another with --port (0: any free port)"
            ) from None
        code = dc.exit_code(container)
        what = f"exited ({code})" if code is not None else f"was not ready within {timeout:g} s"
        reason = _server_error(lines) if code is not None else None
        if reason is not None:  # the server said why in one line (a model it cannot load, a bad setting)
            raise ByocError(f"the serving container {what}: {reason}") from None
        raise ByocError(f"the serving container {what} before answering /ping; its last lines:\n{log}") from exc
    config_lines = [line for line in follower.lines["serve"] if line.startswith('{"event": "config"')]
    config = json.loads(config_lines[0]) if config_lines else {}
    return config, int(json.loads(ready)["port"])


def _server_error(lines: list[str]) -> str | None:
    """The serving image's own one-line reason for stopping (its last `error: ...` line), if it gave one."""
    reasons = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
    return reasons[-1] if reasons else None


def _await_ping(url: str, container: Container, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url + "/ping", timeout=5) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline or dc.exit_code(container) is not None:
            raise ByocError(f"{url}/ping did not answer 200")
        time.sleep(0.2)


def stop_serving(served: Served, timeout: int = STOP_TIMEOUT) -> tuple[int, float]:
    """SIGTERM, up to `timeout` s for the server to drain and exit (then SIGKILL), removal:
    (its exit code, the seconds it took)."""
    started = time.monotonic()
    try:
        served.container.stop(timeout=timeout)
        code = dc.exit_code(served.container)
        served.follower.join(5)
    finally:
        dc.remove(served.container)
    return (code if code is not None else -1), time.monotonic() - started


def settings_line(config: dict) -> str:
    """The server's settings in one line (its `config` log line, without the bulky parts)."""
    skip = {"event", "vmargs", "execution_parameters"}
    return " ".join(f"{k}={v}" for k, v in config.items() if k not in skip and v is not None)


# ---- predict ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    ms: float

    def json(self) -> Any:
        return json.loads(self.body)


def invoke(url: str, body: bytes, content_type: str, top_k: int = 3, timeout: float = 60) -> Answer:
    """POST /invocations, as SageMaker's InvokeEndpoint reaches the container; errors are answers."""
    request = urllib.request.Request(
        url.rstrip("/") + "/invocations",
        data=body,
        method="POST",
        headers={"Content-Type": content_type, "X-Amzn-SageMaker-Custom-Attributes": f"top_k={top_k}"},
    )
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return Answer(resp.status, resp.read(), (time.perf_counter() - started) * 1e3)
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, exc.read(), (time.perf_counter() - started) * 1e3)
    except OSError as exc:
        raise ByocError(f"{url} does not answer ({exc}): is `byoc local serve` running?") from None


def predict_images(url: str, images: list[Path], top_k: int) -> int:
    """Per image: its name and latency, then its top classes as `byoc predict` shows them; 1 when any
    was refused."""
    worst = 0
    for path in images:
        content_type = CONTENT_TYPES.get(path.suffix.lower(), "application/x-image")
        answer = invoke(url, path.read_bytes(), content_type, top_k)
        if answer.status != 200:
            say(f"{path}  HTTP {answer.status}: {answer.body.decode(errors='replace')[:300]}")
            worst = 1
            continue
        say("\n".join([f"{path}  ({answer.ms:.1f} ms)", *ranks(answer.json()["predictions"])]))
    return worst


# ---- the command line ------------------------------------------------------------------------


def register(sub) -> None:
    local = sub.add_parser("local", help="run the images on this machine: train, serve, predict, smoke")
    commands = local.add_subparsers(dest="local_command", metavar="COMMAND", required=True)
    _register_train(commands)
    _register_serve(commands)
    _register_predict(commands)
    from byoc.local import smoke

    smoke.register(commands)


def add_network(p) -> None:
    p.add_argument(
        "--network",
        type=dc.Network,
        choices=list(dc.Network),
        default=dc.Network.AUTO,
        metavar="auto|bridge|host|none",
        help="bridge: a network of the job's own; host: this machine's (default auto: bridge when the engine has one)",
    )


def add_gpus(p) -> None:
    p.add_argument(
        "--gpus", type=_typed(dc.parse_gpus), default="auto", help="auto (default), all, none or device ids (0,1)"
    )


def add_verbose(p) -> None:
    # SUPPRESS: absent here, `byoc --verbose local serve` still counts (a subparser's default would reset it).
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="the container's whole log as it comes, the model server's own included (default: its last "
        f"{TAIL_LINES} lines when it fails)",
    )


def _register_train(commands) -> None:
    p = commands.add_parser("train", help="a training job in containers, one per host (algo-1..N)")
    p.add_argument("--data", type=Path, required=True, help="folder with train/, valid/, test/ of class folders")
    p.add_argument("--hosts", type=int, default=1, help="hosts (containers) taking part, DDP across them")
    add_gpus(p)
    p.add_argument("--checkpoints", type=Path, help="checkpoint folder (default OUTPUT/checkpoints): reruns resume")
    p.add_argument("--output", type=Path, default=Path("byoc-local-train"), help="model/ and output/ go here")
    p.add_argument("--image", default=TRAIN_IMAGE, help=f"training image (default {TRAIN_IMAGE})")
    p.add_argument("--shm-size", type=_typed(dc.parse_size), help="/dev/shm per container (default: 1/4 of memory)")
    p.add_argument(
        "--weights",
        type=Path,
        metavar="FILE",
        help="pretrained weights (torchvision's .pth for --arch, or a state dict of your own) as the job's "
        "'weights' channel: with --pretrained the job loads them instead of downloading",
    )
    add_network(p)
    hp_args.add_options(p)
    p.set_defaults(func=_train_command)


def _train_command(args) -> int:
    spec = TrainSpec(
        data=args.data,
        output=args.output,
        hyperparameters=hp_args.collect(args),
        hosts=args.hosts,
        gpus=args.gpus,
        checkpoints=args.checkpoints,
        image=args.image,
        shm_size=args.shm_size,
        network=args.network,
        weights=args.weights,
    )
    result = train(spec)
    report_training(result, spec)
    return result.exit_code


def _register_serve(commands) -> None:
    p = commands.add_parser("serve", help="serve a model folder on 127.0.0.1 until Ctrl-C")
    p.add_argument("model_dir", type=Path, metavar="MODEL_DIR", help="a training job's model/ folder")
    p.add_argument("--port", type=int, default=SERVE_PORT, help=f"port on 127.0.0.1 (default {SERVE_PORT}; 0: any)")
    p.add_argument("--image", default=SERVE_IMAGE, help="byoc-serve:latest (default) or byoc-serve:cpu")
    add_gpus(p)
    p.add_argument("--env", type=_pair, action="append", default=[], metavar="NAME=VALUE", help="a serving setting")
    add_network(p)
    add_verbose(p)
    p.set_defaults(func=_serve_command)


def _serve_command(args) -> int:
    spec = ServeSpec(
        args.model_dir, args.port, args.image, args.gpus, dict(args.env), args.network, verbose=args.verbose
    )
    if spec.model_dir.is_dir() and not any(spec.model_dir.iterdir()):
        raise BadModelDir(f"{spec.model_dir} is empty: give a training job's model/ folder (e.g. OUTPUT/model)")
    served = start_serving(spec)
    say(f"== serving {spec.model_dir} at {served.url} (POST {served.url}/invocations); Ctrl-C stops it")
    say(f"container: {served.container.name} ({spec.image})")
    say(f"settings: {settings_line(served.config)}")
    stop = False

    def on_signal(_signum: int, _count: int) -> None:
        nonlocal stop
        stop = True

    try:
        with dc.signals_forwarded(on_signal):
            while not stop and dc.exit_code(served.container) is None:
                time.sleep(0.5)
    finally:
        died = dc.exit_code(served.container)
        code, seconds = stop_serving(served)
    if died is not None:
        if not spec.verbose:  # its lines were not shown as they came: the last ones say why
            for line in served.follower.lines.get("serve", [])[-TAIL_LINES:]:
                print(f"serve | {line}", file=sys.stderr)
        print(f"error: the serving container exited by itself ({died})", file=sys.stderr)
        return died or 1
    say(f"== stopped (SIGTERM; exit {code} after {seconds:.1f} s)")
    return code


def _register_predict(commands) -> None:
    p = commands.add_parser("predict", help="classify images with a served model (a URL) or a model folder")
    p.add_argument("target", metavar="URL|MODEL_DIR", help="`byoc local serve`'s URL, or a model folder to serve")
    p.add_argument("images", type=Path, nargs="+", metavar="IMAGE")
    p.add_argument("--top-k", type=int, default=3, help="classes per image")
    p.add_argument("--image", default=SERVE_IMAGE, help="serving image for a model folder")
    add_gpus(p)
    add_network(p)
    add_verbose(p)
    p.set_defaults(func=_predict_command)


def _predict_command(args) -> int:
    # Checked here, in the flag's own words: the server would refuse it as a bad custom attribute.
    if args.top_k < 1:
        raise ConfigError(f"--top-k must be 1 or more, got {args.top_k}")
    missing = [str(p) for p in args.images if not p.is_file()]
    if missing:
        raise ByocError(f"no such image file(s): {', '.join(missing)}")
    if args.target.startswith(("http://", "https://")):
        return predict_images(args.target, args.images, args.top_k)
    spec = ServeSpec(Path(args.target), 0, args.image, args.gpus, network=args.network, verbose=args.verbose)
    with serving(spec, quiet=not spec.verbose) as served:
        say(f"== serving {spec.model_dir} at {served.url}: {settings_line(served.config)}")
        say(f"container: {served.container.name} ({spec.image})")
        return predict_images(served.url, args.images, args.top_k)
