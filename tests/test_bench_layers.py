"""bench/layers.py: the per-layer table's differences and the cgroup CPU reading (no timing asserted)."""

from __future__ import annotations

import pytest

from bench import layers


def test_the_table_gives_the_front_and_the_model_server_hop_as_differences():
    results = {
        "byoc": {
            "2MP": {
                "whole": {"p50_ms": 90.0, "cpu_ms": 140.0},
                "model_server": {"p50_ms": 88.5, "cpu_ms": 137.0},
                "handler": {"p50_ms": 84.0, "cpu_ms": 128.0},
            }
        },
        "byoc-cpu": {
            "2MP": {"whole": {"p50_ms": 31.0, "cpu_ms": 45.0}, "model_server": {"p50_ms": 30.2, "cpu_ms": 43.0}}
        },
    }
    rows = layers.table(results).splitlines()[2:]
    assert rows[0].split(" | ")[5:7] == ["1.5", "4.5"]  # front = whole - model server; hop = model server - handler
    assert rows[0].endswith("140.0 / 137.0 / 128.0 |")
    assert rows[1].split(" | ")[4:7] == ["-", "0.8", "-"]  # no torch in the image: no handler, no hop


@pytest.mark.parametrize(
    ("name", "text", "seconds"),
    [("cpuacct.usage", "2500000000\n", 2.5), ("cpu.stat", "usage_usec 1500000\nuser_usec 1000000\n", 1.5)],
)
def test_container_cpu_reads_cgroup_v1_and_v2(tmp_path, monkeypatch, name, text, seconds):
    path = tmp_path / name
    path.write_text(text)
    per_second = 1e6 if name == "cpu.stat" else 1e9
    monkeypatch.setattr(layers, "CGROUP_CPU", ((str(tmp_path / "absent"), 1e9), (str(path), per_second)))
    assert layers.container_cpu() == seconds
