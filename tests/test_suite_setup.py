"""The test suite's own footprint: what it leaves on disk, and its refusal to start on a full disk."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests import dockerutil as du

REPO = Path(__file__).resolve().parents[1]

TWO_TESTS = """
def test_passes(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"x" * 1024)

def test_fails(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"x" * 1024)
    assert False
"""


def test_only_a_failed_tests_folder_is_kept(tmp_path):
    """pyproject.toml's retention: a passed test's folder goes at its end (checkpoints are 175 MB each)."""
    (tmp_path / "test_two.py").write_text(TWO_TESTS)
    basetemp = tmp_path / "base"
    cmd = [sys.executable, "-m", "pytest", "-c", str(REPO / "pyproject.toml"), "--rootdir", str(tmp_path)]
    cmd += ["-p", "no:cacheprovider", "--basetemp", str(basetemp), str(tmp_path / "test_two.py")]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert "1 failed, 1 passed" in proc.stdout, proc.stdout[-2000:]
    assert sorted(p.name for p in basetemp.iterdir() if not p.is_symlink()) == ["test_fails0"]


def test_a_full_disk_stops_the_run_when_its_tests_are_collected(tmp_path):
    """conftest.py's check, in a pytest run of container tests whose disk is too small for them
    (DISK_NEEDED raised past any disk): it exits 1 with the reason once collection ends, before any
    test could run (--collect-only here, so that no container starts if the check is gone)."""
    too_much = (
        "import sys, pytest; from tests import dockerutil as du; du.DISK_NEEDED = 2**62; "
        f"sys.exit(pytest.main(['-p', 'no:cacheprovider', '--basetemp', {str(tmp_path / 'base')!r}, "
        "'--collect-only', 'tests/test_train_container.py']))"
    )
    proc = subprocess.run([sys.executable, "-c", too_much], capture_output=True, text=True, cwd=REPO, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-2000:]
    assert "GB free on the disk of" in out and "rm -rf" in out and "--basetemp" in out, out[-2000:]
    assert du.disk_shortage(tmp_path / "not" / "made", need=1) is None
