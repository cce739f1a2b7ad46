"""`make bench` removes every container it starts (bench/containers.py): each carries the run's
label and is removed when its step ends, also when the run is stopped by SIGTERM (bench/__main__.py
unwinds on it); a run removes what it left itself at its end, and earlier dead runs' leftovers at its
start. Docker here is a stand-in `docker` executable on PATH that keeps its containers in a JSON file."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bench import containers

REPO = Path(__file__).resolve().parents[1]

# The docker CLI as far as bench uses it: run (-d, or attached with --rm), ps -a with a label filter
# and a {{.Label "KEY"}} format, rm -f, and image inspect / version answered with a size and a version.
FAKE_DOCKER = textwrap.dedent(
    """\
    import json, os, re, sys, time, uuid
    state_path, argv = os.environ["FAKE_DOCKER_STATE"], sys.argv[1:]
    with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
        log.write(json.dumps(argv) + "\\n")
    state = json.load(open(state_path)) if os.path.exists(state_path) else {}
    save = lambda: json.dump(state, open(state_path, "w"))
    if argv[0] == "run":
        name = argv[argv.index("--name") + 1]
        labels = dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "--label")
        state[name] = {"id": uuid.uuid4().hex[:12], "labels": labels}
        save()
        if "-d" not in argv:  # attached: runs, then --rm removes it
            time.sleep(float(os.environ.get("FAKE_DOCKER_RUN_SECONDS", "0")))
            state.pop(name, None)
            save()
        print(state.get(name, {}).get("id", "done"))
    elif argv[0] == "ps":
        key, _, value = argv[argv.index("--filter") + 1].removeprefix("label=").partition("=")
        shown = re.search(r'{{\\.Label "([^"]+)"}}', argv[argv.index("--format") + 1])[1]
        for name, c in state.items():
            if key in c["labels"] and (not value or c["labels"][key] == value):
                print(f"{c['id']}\\t{name}\\t{c['labels'].get(shown, '')}")
    elif argv[0] == "rm":
        gone = [n for n, c in state.items() if n in argv[2:] or c["id"] in argv[2:]]
        for name in gone:
            del state[name]
        save()
        sys.exit(0 if gone else 1)
    elif argv[:2] == ["image", "inspect"]:
        print("1000000000")
    elif argv[0] == "version":
        print("27.0-fake")
    """
)


class FakeDocker:
    """The stand-in's containers and the commands it was given."""

    def __init__(self, folder: Path):
        folder.mkdir()
        self.folder, self.state, self.log = folder, folder / "state.json", folder / "calls.jsonl"
        self.state.write_text("{}")
        self.log.write_text("")
        script = folder / "docker"
        script.write_text(f"#!{sys.executable}\n{FAKE_DOCKER}")
        script.chmod(0o755)

    def env(self) -> dict[str, str]:
        return {
            "PATH": f"{self.folder}{os.pathsep}{os.environ['PATH']}",
            "FAKE_DOCKER_STATE": str(self.state),
            "FAKE_DOCKER_LOG": str(self.log),
        }

    def containers(self) -> dict[str, dict]:
        return json.loads(self.state.read_text())

    def add(self, name: str, **labels: str) -> None:
        state = self.containers()
        state[name] = {"id": f"id-{name}", "labels": labels}
        self.state.write_text(json.dumps(state))

    def calls(self) -> list[list[str]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()]


@pytest.fixture
def fake_docker(tmp_path, monkeypatch) -> FakeDocker:
    fake = FakeDocker(tmp_path / "bin")
    for key, value in fake.env().items():
        monkeypatch.setenv(key, value)
    return fake


def dead_run_id() -> str:
    """The run id of a bench process that has ended."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return f"{proc.pid}-dead00"


def test_a_server_container_carries_the_run_label_and_is_removed_when_its_step_fails(fake_docker):
    with (
        pytest.raises(RuntimeError, match="load failed"),
        containers.running("img", ["serve"], [], "byoc") as (name, _),
    ):
        assert fake_docker.containers()[name]["labels"] == {containers.LABEL: containers.RUN_ID}
        raise RuntimeError("load failed")
    assert fake_docker.containers() == {}
    assert ["rm", "-f", name] in fake_docker.calls()


def test_a_one_off_container_carries_the_run_label_and_is_removed_after(fake_docker):
    assert containers.run_once("img", ["train"], [], "train").returncode == 0
    run = next(call for call in fake_docker.calls() if call[0] == "run")
    assert run[run.index("--label") + 1] == f"{containers.LABEL}={containers.RUN_ID}"
    assert fake_docker.containers() == {}


def test_at_start_dead_runs_leftovers_are_removed_and_said_and_a_live_runs_are_kept(fake_docker, caplog):
    fake_docker.add("byoc-bench-byoc-dead", **{containers.LABEL: dead_run_id()})
    fake_docker.add("byoc-bench-byoc-live", **{containers.LABEL: f"{os.getppid()}-live00"})  # another live run
    fake_docker.add("someone-elses")
    with caplog.at_level(logging.INFO, logger="bench"), containers.cleaned_up():
        assert set(fake_docker.containers()) == {"byoc-bench-byoc-live", "someone-elses"}
    assert [r.getMessage() for r in caplog.records] == [
        "removed 1 container(s) left by earlier bench runs: byoc-bench-byoc-dead"
    ]


def test_at_the_end_every_container_this_run_left_is_removed_however_it_ends(fake_docker, caplog):
    fake_docker.add("byoc-bench-stray", **{containers.LABEL: containers.RUN_ID})  # its own step never removed it
    fake_docker.add("byoc-bench-other", **{containers.LABEL: f"{os.getppid()}-live00"})
    with caplog.at_level(logging.INFO, logger="bench"), pytest.raises(KeyboardInterrupt), containers.cleaned_up():
        raise KeyboardInterrupt
    assert set(fake_docker.containers()) == {"byoc-bench-other"}
    assert caplog.records[-1].getMessage() == "removed 1 container(s) this run left: byoc-bench-stray"


# A bench run reduced to one server container, stopped while it serves.
STOPPED_RUN = """
import sys, time
from bench import containers
from bench.__main__ import stop_unwinds
with stop_unwinds(), containers.cleaned_up():
    with containers.running("byoc-serve:latest", [], [], "byoc") as (name, _):
        print(name, flush=True)
        time.sleep(60)
"""


@pytest.mark.parametrize("unwinds", [True, False], ids=["bench", "without-stop_unwinds"])
def test_sigterm_unwinds_the_run_and_its_server_container_is_removed(fake_docker, unwinds):
    code = STOPPED_RUN if unwinds else STOPPED_RUN.replace("stop_unwinds(), ", "")
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'src'}"}
    child = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert child.stdout is not None
        name = child.stdout.readline().strip()
        assert name in fake_docker.containers()
        child.send_signal(signal.SIGTERM)
        returncode = child.wait(30)
    finally:
        child.kill()
    if unwinds:
        assert returncode == 128 + signal.SIGTERM  # what a shell reports for a process SIGTERM ended
        assert fake_docker.containers() == {}
    else:  # Python's default: the process ends at once and its container stays (what stop_unwinds prevents)
        assert returncode == -signal.SIGTERM
        assert name in fake_docker.containers()


def test_make_bench_removes_leftovers_at_start_and_restores_the_signal_handlers(fake_docker, tmp_path, capsys):
    from bench.__main__ import main

    fake_docker.add("byoc-bench-byoc-dead", **{containers.LABEL: dead_run_id()})
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGHUP)
    assert main(["--only", "sizes", "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")]) == 0
    assert fake_docker.containers() == {}
    assert ["rm", "-f", "id-byoc-bench-byoc-dead"] in fake_docker.calls()
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGHUP)) == before
    assert json.loads((tmp_path / "out" / "results.json").read_text())["sizes"][0]["gb"] == 1.0
