"""`byoc local smoke`: the check to run on freshly built images before pushing them (about two
minutes): a tiny training job on the demo dataset, its model served by each serving image, a
real prediction, a bad input answered 4xx with a JSON body, and SIGTERM stopping the server
within 30 s. A table of the checks; exit 1 when any failed.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from byoc.core.errors import ByocError
from byoc.local import containers as dc
from byoc.local import docker_jobs

# Fast settings that still train a real model on the demo data (16 px digits, one epoch).
SMOKE_HPS = {
    "arch": "resnet18",
    "image-size": "16",
    "pretrained": "false",
    "epochs": "1",
    "batch-size": "64",
    "lr": "0.003",
    "num-workers": "1",
    "amp": "off",
    "channels-last": "false",
}
STOP_LIMIT = 30.0  # seconds: SageMaker kills a container that has not exited 30 s after SIGTERM


@dataclass
class Check:
    name: str
    ok: bool
    seconds: float
    detail: str


class Checks:
    """The table: each check timed, its failure kept as a row instead of ending the run."""

    def __init__(self) -> None:
        self.rows: list[Check] = []

    def run(self, name: str, step: Callable[[], str]) -> bool:
        started = time.monotonic()
        try:
            detail, ok = step(), True
        except (ByocError, AssertionError, OSError, ValueError, KeyError) as exc:
            detail, ok = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__, False
        self.rows.append(Check(name, ok, time.monotonic() - started, detail))
        docker_jobs.say(f"== {'PASS' if ok else 'FAIL'} {name}: {detail}")
        return ok

    def table(self) -> str:
        width = max(len(r.name) for r in self.rows)
        lines = [f"{'check':<{width}}  result  seconds  detail"]
        lines += [
            f"{r.name:<{width}}  {'PASS' if r.ok else 'FAIL':<6}  {r.seconds:7.1f}  {r.detail}" for r in self.rows
        ]
        return "\n".join(lines)

    @property
    def passed(self) -> bool:
        return bool(self.rows) and all(r.ok for r in self.rows)


def smoke(
    train_image: str,
    serve_images: list[str],
    hyperparameters: dict[str, str],
    env: dict[str, str],
    network: dc.Network,
    quiet: bool = True,
) -> Checks:
    """Every check, in order; later ones are skipped once there is nothing left to check."""
    checks = Checks()
    with tempfile.TemporaryDirectory(prefix="byoc-smoke-") as tmp:
        work = Path(tmp)
        try:
            _smoke_in(work, checks, train_image, serve_images, hyperparameters, env, network, quiet)
        finally:
            _clean(work, train_image)
    return checks


def _smoke_in(work, checks, train_image, serve_images, hyperparameters, env, network, quiet) -> None:
    client = dc.engine()
    for image in [train_image, *serve_images]:
        dc.require_image(client, image)
    data = work / "data"
    if not checks.run("demo data", lambda: _demo_data(client, train_image, data)):
        return
    spec = docker_jobs.TrainSpec(
        data=data,
        output=work / "train",
        hyperparameters={**SMOKE_HPS, **hyperparameters},
        gpus="auto",
        image=train_image,
        network=network,
    )
    if not checks.run(f"train ({train_image})", lambda: _train(spec, quiet)):
        return
    labels = json.loads((spec.output / "model" / "model.json").read_text())["labels"]
    sample = sorted((data / "test").glob("*/*.png"))[0]
    for image in serve_images:
        _serve_checks(
            checks,
            docker_jobs.ServeSpec(spec.output / "model", 0, image, env=env, network=network, verbose=not quiet),
            sample,
            labels,
            quiet,
        )


def _demo_data(client, image: str, data: Path) -> str:
    """The embedded demo dataset, written by the training image (the host needs no scikit-learn)."""
    data.mkdir(parents=True)
    client.containers.run(
        image,
        ["byoc", "demo-data", "/data", "--size", "16"],
        network_mode="none",
        volumes={str(data.resolve()): {"bind": "/data", "mode": "rw"}},
        remove=True,
    )
    return f"{sum(1 for _ in data.rglob('*.png'))} images"


def _train(spec: docker_jobs.TrainSpec, quiet: bool) -> str:
    result = docker_jobs.train(spec, dc.LogFollower(quiet=quiet))
    if result.exit_code != 0:
        raise ByocError(f"exit {result.exit_code}: {result.reason or 'no failure reason'}")
    metrics = json.loads((spec.output / "output" / "data" / "metrics.json").read_text())
    return f"test_accuracy={metrics.get('test_accuracy', 0):.3f} ({result.seconds:.0f} s)"


def _serve_checks(checks: Checks, spec: docker_jobs.ServeSpec, sample: Path, labels: list[str], quiet: bool) -> None:
    image = spec.image
    served: list[docker_jobs.Served] = []
    if not checks.run(f"serve ({image})", lambda: _start(spec, served, quiet)):
        return
    try:
        url = served[0].url
        checks.run(f"prediction ({image})", lambda: _prediction(url, sample, labels))
        checks.run(f"bad input -> 4xx ({image})", lambda: _bad_input(url))
    finally:
        checks.run(f"SIGTERM exit < {STOP_LIMIT:g} s ({image})", lambda: _stop(served[0]))


def _start(spec: docker_jobs.ServeSpec, served: list[docker_jobs.Served], quiet: bool) -> str:
    served.append(docker_jobs.start_serving(spec, quiet=quiet))
    config = served[0].config
    return f"{served[0].url} workers={config.get('workers')} device={'gpu' if config.get('gpus') else 'cpu'}"


def _prediction(url: str, sample: Path, labels: list[str]) -> str:
    answer = docker_jobs.invoke(url, sample.read_bytes(), "image/png")
    assert answer.status == 200, f"HTTP {answer.status}: {answer.body[:200]!r}"
    predictions = answer.json()["predictions"]
    assert predictions and all(p["label"] in labels for p in predictions), f"unexpected answer {predictions}"
    return f"{sample.parent.name}/{sample.name} -> {predictions[0]['label']} {predictions[0]['score']:.2f}"


def _bad_input(url: str) -> str:
    answer = docker_jobs.invoke(url, b"this is not an image", "image/png")
    assert 400 <= answer.status < 500, f"HTTP {answer.status}, expected 4xx"
    try:
        body = answer.json()
    except ValueError:
        raise AssertionError(f"HTTP {answer.status} but the body is not JSON: {answer.body[:120]!r}") from None
    return f"HTTP {answer.status} {json.dumps(body)[:80]}"


def _stop(served: docker_jobs.Served) -> str:
    code, seconds = docker_jobs.stop_serving(served, timeout=int(STOP_LIMIT))
    assert code == 0 and seconds < STOP_LIMIT, f"exit {code} after {seconds:.1f} s"
    return f"exit 0 after {seconds:.1f} s"


def _clean(work: Path, image: str) -> None:
    with suppress(ByocError):  # an engine gone by now has been reported already
        dc.remove_tree(dc.engine(), image, work / "train")


def register(commands) -> None:
    p = commands.add_parser("smoke", help="the pre-push check of the images (about two minutes)")
    p.add_argument("--train-image", default=docker_jobs.TRAIN_IMAGE, help="training image")
    p.add_argument(
        "--serve-image", action="append", help=f"serving image; repeat for several (default {docker_jobs.SERVE_IMAGE})"
    )
    p.add_argument(
        "--hp",
        type=docker_jobs._pair,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a training setting over the smoke's fast ones",
    )
    p.add_argument(
        "--env", type=docker_jobs._pair, action="append", default=[], metavar="NAME=VALUE", help="a serving setting"
    )
    p.add_argument("--verbose-logs", action="store_true", help="print the containers' logs too")
    docker_jobs.add_network(p)
    p.set_defaults(func=_smoke_command)


def _smoke_command(args) -> int:
    started = time.monotonic()
    serve_images = args.serve_image or [docker_jobs.SERVE_IMAGE]
    checks = smoke(args.train_image, serve_images, dict(args.hp), dict(args.env), args.network, not args.verbose_logs)
    print("\n" + checks.table(), flush=True)
    verdict = "passed" if checks.passed else "FAILED"
    print(f"smoke {verdict} in {time.monotonic() - started:.0f} s", file=sys.stdout if checks.passed else sys.stderr)
    return 0 if checks.passed else 1
