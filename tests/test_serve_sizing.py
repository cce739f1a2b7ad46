"""Default worker and thread counts (byoc.serve.sizing) and settings (byoc.serve.config)."""

from __future__ import annotations

import os
import re

import psutil
import pytest

from byoc.core.errors import ConfigError
from byoc.serve import sizing
from byoc.serve.config import BatchStrategy, ExecutionParameters, ServeConfig

GB = 1024**3
RESNET50 = 100 * 1024**2


@pytest.mark.parametrize("cores, workers, threads", [(1, 1, 1), (2, 2, 2), (4, 2, 4), (8, 2, 4), (96, 24, 4)])
def test_cpu_defaults_give_one_request_all_cores_and_overlap_two_workers(cores, workers, threads):
    plan = sizing.plan(cores, 0, RESNET50, 64 * GB)
    assert (plan.workers, plan.threads) == (workers, threads)
    assert plan.threads == min(cores, 4) and plan.workers * plan.threads <= max(cores, 2 * plan.threads)


def test_memory_caps_workers():
    plan = sizing.plan(96, 0, RESNET50, 2 * GB)
    assert (plan.workers, plan.threads) == (1, 4)
    assert sizing.plan(96, 0, 4 * GB, 1 * GB).workers == 1  # never zero


def test_two_workers_per_gpu_where_the_cores_allow():
    plan = sizing.plan(8, 4, RESNET50, 64 * GB)
    assert (plan.workers, plan.threads) == (8, 1)


def test_explicit_workers_set_threads():
    plan = sizing.plan(8, 0, RESNET50, 64 * GB, workers=8)
    assert (plan.workers, plan.threads, plan.reason) == (8, 1, "SAGEMAKER_MODEL_SERVER_WORKERS")


def test_config_from_sagemaker_variables():
    cfg = ServeConfig.from_env(
        {
            "SAGEMAKER_BIND_TO_PORT": "9000",
            "SAGEMAKER_MODEL_SERVER_WORKERS": "3",
            "SAGEMAKER_MODEL_SERVER_TIMEOUT": "20",
            "SAGEMAKER_MAX_PAYLOAD_IN_MB": "2",
            "SAGEMAKER_BASE_DIR": "/x",
        }
    )
    assert (cfg.port, cfg.workers, cfg.timeout, cfg.max_request_bytes) == (9000, 3, 20, 2 * 1024**2)
    assert str(cfg.model_dir) == "/x/model"
    assert ServeConfig.from_env({}).max_request_bytes == 6 * 1024**2
    newer = ServeConfig.from_env(
        {"SAGEMAKER_MODEL_SERVER_TIMEOUT": "20", "SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS": "90"}
    )
    assert newer.timeout == 90


def test_batching_and_access_log_settings():
    default = ServeConfig.from_env({})
    assert (default.batch_size, default.max_batch_delay_ms, default.access_log) == (None, 0, False)  # None: sizing
    cfg = ServeConfig.from_env({"BYOC_BATCH_SIZE": "16", "BYOC_MAX_BATCH_DELAY_MS": "5", "BYOC_ACCESS_LOG": "1"})
    assert (cfg.batch_size, cfg.max_batch_delay_ms, cfg.access_log) == (16, 5, True)


@pytest.mark.parametrize(
    "env",
    [
        {"SAGEMAKER_MODEL_SERVER_WORKERS": "two"},
        {"BYOC_TOP_K": "0"},
        {"BYOC_BATCH_SIZE": "0"},
        {"BYOC_MAX_BATCH_DELAY_MS": "-1"},
    ],
)
def test_bad_settings_are_config_errors(env):
    with pytest.raises(ConfigError):
        ServeConfig.from_env(env)


def test_model_bytes_and_gpus_without_torch(tmp_path):
    (tmp_path / "model.json").write_text("{}")
    (tmp_path / "model.pt").write_bytes(b"0" * 5000)
    assert sizing.weights_bytes(tmp_path) == 5000
    assert sizing.weights_bytes(tmp_path / "missing") == 0
    assert sizing.gpu_count() == 0  # this machine has no /dev/nvidiaN


# ---- batch transform and the payload limit


def test_batch_settings_from_sagemaker_variables():
    default = ServeConfig.from_env({})
    assert (default.batch, default.batch_strategy, default.max_concurrent_transforms) == (False, None, None)
    cfg = ServeConfig.from_env(
        {
            "SAGEMAKER_BATCH": "True",
            "SAGEMAKER_BATCH_STRATEGY": "single_record",
            "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS": "3",
            "SAGEMAKER_MAX_PAYLOAD_IN_MB": "100",
        }
    )
    assert (cfg.batch, cfg.batch_strategy, cfg.max_concurrent_transforms) == (True, BatchStrategy.SINGLE_RECORD, 3)
    assert cfg.max_request_bytes == 100 * 1024**2
    # CreateTransformJob's spelling too
    assert (
        ServeConfig.from_env({"SAGEMAKER_BATCH_STRATEGY": "MultiRecord"}).batch_strategy is BatchStrategy.MULTI_RECORD
    )
    assert not ServeConfig.from_env({"SAGEMAKER_BATCH": "FALSE"}).batch


@pytest.mark.parametrize(
    "env, message",
    [
        ({"SAGEMAKER_BATCH": "yes"}, "SAGEMAKER_BATCH='yes' must be true or false"),
        ({"SAGEMAKER_BATCH_STRATEGY": "ALL"}, "must be MULTI_RECORD or SINGLE_RECORD"),
        ({"SAGEMAKER_MAX_CONCURRENT_TRANSFORMS": "0"}, "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS=0 must be >= 1"),
        ({"SAGEMAKER_MAX_PAYLOAD_IN_MB": "0"}, "SAGEMAKER_MAX_PAYLOAD_IN_MB=0 must be >= 1"),
        (
            {"SAGEMAKER_BATCH": "true", "SAGEMAKER_MAX_PAYLOAD_IN_MB": "101"},
            "SAGEMAKER_MAX_PAYLOAD_IN_MB=101 is over 100, batch transform's limit",
        ),
        ({"SAGEMAKER_MAX_PAYLOAD_IN_MB": "1025"}, "is over 1024, asynchronous inference's limit"),
    ],
)
def test_bad_batch_and_payload_settings_name_the_limit(env, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        ServeConfig.from_env(env)


def test_asynchronous_inference_may_take_1_gb_and_an_hour():
    cfg = ServeConfig.from_env({"SAGEMAKER_MAX_PAYLOAD_IN_MB": "1024", "SAGEMAKER_MODEL_SERVER_TIMEOUT": "3600"})
    assert (cfg.max_request_bytes, cfg.timeout) == (1024 * 1024**2, 3600)


def test_batch_transform_defaults_to_its_longest_invocation_timeout():
    assert ServeConfig.from_env({}).timeout == 60
    assert ServeConfig.from_env({"SAGEMAKER_BATCH": "true"}).timeout == 3600
    assert ServeConfig.from_env({"SAGEMAKER_BATCH": "true", "SAGEMAKER_MODEL_SERVER_TIMEOUT": "90"}).timeout == 90
    assert ServeConfig.from_env({"SAGEMAKER_BATCH": "true", "SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS": "5"}).timeout == 5


def test_the_body_limit_and_execution_parameters_for_the_machine():
    # Real-time defaults: 6 MB, whatever memory would allow, and /execution-parameters never offers more.
    realtime = ServeConfig.from_env({}).for_machine(100)
    assert realtime.max_request_bytes == 6 * 1024**2
    assert realtime.execution_parameters(2, 100) == ExecutionParameters(2, BatchStrategy.MULTI_RECORD, 6)
    assert realtime.execution_parameters(2, 3).max_payload_mb == 3  # memory allows less than the limit
    # Batch transform without a payload variable: what memory allows is both the limit and the offer.
    batch = ServeConfig.from_env({"SAGEMAKER_BATCH": "true"}).for_machine(40)
    assert batch.max_request_bytes == 40 * 1024**2
    assert batch.execution_parameters(2, 40) == ExecutionParameters(2, BatchStrategy.MULTI_RECORD, 40)
    # The variables, where set, are the answer.
    env = {
        "SAGEMAKER_BATCH": "true",
        "SAGEMAKER_MAX_PAYLOAD_IN_MB": "100",
        "SAGEMAKER_BATCH_STRATEGY": "SINGLE_RECORD",
        "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS": "5",
    }
    told = ServeConfig.from_env(env).for_machine(7)
    assert told.max_request_bytes == 100 * 1024**2
    assert told.execution_parameters(2, 7).document() == {
        "MaxConcurrentTransforms": 5,
        "BatchStrategy": "SINGLE_RECORD",
        "MaxPayloadInMB": 100,
    }


def test_payload_for_the_memory_the_workers_leave():
    model = 45 * 1024**2
    # (0.8 x 8 GiB - 2 x (500 + 4 x 45) MiB - 512 MiB) / (2 x 2 + 2 x 3 copies) = 468 MiB: capped at 100
    assert sizing.payload_mb(8 * GB, 2, model, 2, 100) == 100
    assert sizing.payload_mb(3 * GB, 2, model, 2, 100) == 58  # (2458 - 1360 - 512) / 10
    assert sizing.payload_mb(2 * GB, 2, model, 2, 100) == 1  # nothing left: never 0
    assert sizing.payload_mb(3 * GB, 2, model, 8, 100) == 26  # more bodies in flight, less each: 585 / 22


def test_the_jvm_heap_holds_a_full_body_per_worker(monkeypatch):
    monkeypatch.setattr(sizing, "memory_limit", lambda: None)
    assert sizing.jvm_heap_mb(6 * 1024**2, 2) == 512 + 2 * 2 * 6
    assert sizing.jvm_heap_mb(1024 * 1024**2, 2) == 512 + 4096  # asynchronous inference's 1 GB
    assert sizing.jvm_heap_mb(1, 1) == 514  # a part of a MB counts as one


# ---- serverless: a memory limit of 1024..6144 MB, vCPUs in proportion, 4 MB bodies

MIB = 1024**2


def cgroup(monkeypatch, files: dict[str, str]) -> None:
    """This container's cgroup files, as sizing reads them (paths under /sys/fs/cgroup)."""
    monkeypatch.setattr(sizing, "_read", lambda *paths: next((files[p] for p in paths if p in files), None))


@pytest.mark.parametrize(
    "files, limit, quota",
    [
        ({"memory.max": "2147483648", "cpu.max": "100000 100000"}, 2 * GB, 1.0),  # v2, docker --memory 2g --cpus 1
        ({"memory.max": "max", "cpu.max": "max 100000"}, None, None),  # v2 without limits
        (
            {
                "memory/memory.limit_in_bytes": "3221225472",
                "cpu/cpu.cfs_quota_us": "150000",
                "cpu/cpu.cfs_period_us": "100000",
            },
            3 * GB,
            1.5,
        ),
        (
            {
                "memory/memory.limit_in_bytes": "9223372036854771712",  # v1's "no limit"
                "cpu/cpu.cfs_quota_us": "-1",
                "cpu/cpu.cfs_period_us": "100000",
            },
            None,
            None,
        ),
    ],
)
def test_memory_limit_and_cpu_quota_from_cgroups_v1_and_v2(monkeypatch, files, limit, quota):
    cgroup(monkeypatch, files)
    assert (sizing.memory_limit(), sizing.cpu_quota()) == (limit, quota)


@pytest.mark.parametrize(
    "files, kills",
    [
        (
            {
                "memory.max": str(GB),
                "memory.current": str(GB // 2),
                "memory.stat": "anon 1\ninactive_file 1000\n",
                "memory.events": "low 0\noom 2\noom_kill 2\n",
            },
            2,
        ),
        (
            {
                "memory/memory.limit_in_bytes": str(GB),
                "memory/memory.usage_in_bytes": str(GB // 2),
                "memory/memory.stat": "cache 5\ntotal_inactive_file 1000\n",
                "memory/memory.oom_control": "oom_kill 3\n",
            },
            3,
        ),
    ],
)
def test_droppable_page_cache_counts_as_free_only_when_asked_and_oom_kills_are_read(monkeypatch, files, kills):
    cgroup(monkeypatch, files)
    monkeypatch.setattr(sizing.psutil, "virtual_memory", lambda: type("VM", (), {"available": 4 * GB})())
    assert sizing.memory_available() == GB // 2
    assert sizing.memory_available(droppable_cache=True) == GB // 2 + 1000
    assert sizing.oom_kills() == kills


def test_no_cgroup_files_no_oom_kills(monkeypatch):
    cgroup(monkeypatch, {})
    assert sizing.oom_kills() == 0


@pytest.mark.parametrize(
    "affinity, files, cores",
    [
        (8, {}, 8),  # no cgroup files: the CPUs this process may run on
        (8, {"cpu.max": "max 100000"}, 8),  # v2 without a quota
        (8, {"cpu.max": "200000 100000"}, 2),  # v2, docker --cpus 2
        (8, {"cpu/cpu.cfs_quota_us": "150000", "cpu/cpu.cfs_period_us": "100000"}, 1),  # v1, 1.5 CPUs: whole ones
        (8, {"cpu.max": "50000 100000"}, 1),  # half a CPU: still one
        (2, {"cpu.max": "400000 100000"}, 2),  # an affinity narrower than the quota
    ],
)
def test_cpu_count_is_the_affinity_capped_by_the_cpu_quota(monkeypatch, affinity, files, cores):
    cgroup(monkeypatch, files)
    monkeypatch.setattr(sizing.os, "sched_getaffinity", lambda pid: set(range(affinity)))
    assert sizing.cpu_count() == cores


@pytest.mark.parametrize(
    "files, available",
    [
        ({}, 4 * GB),  # no cgroup files: the machine's available memory
        ({"memory.max": "max", "memory.current": str(GB)}, 4 * GB),  # v2 without a limit
        ({"memory.max": str(2 * GB), "memory.current": str(GB // 2)}, 3 * GB // 2),  # what the limit leaves
        ({"memory.max": str(8 * GB), "memory.current": str(GB)}, 4 * GB),  # the machine has less than that
        ({"memory.max": str(GB), "memory.current": str(2 * GB)}, 0),  # over the limit: none, never negative
    ],
)
def test_memory_available_is_the_machines_capped_by_what_the_cgroup_limit_leaves(monkeypatch, files, available):
    cgroup(monkeypatch, files)
    monkeypatch.setattr(sizing.psutil, "virtual_memory", lambda: type("VM", (), {"available": 4 * GB})())
    assert sizing.memory_available() == available


def test_the_probes_on_this_machine_stay_within_what_it_has():
    assert 1 <= sizing.cpu_count() <= len(os.sched_getaffinity(0))
    assert 0 < sizing.memory_available() <= psutil.virtual_memory().total


@pytest.mark.parametrize(
    "limit_mib, cores, vcpus",
    [(1024, 8, 1), (2048, 8, 1), (3072, 8, 2), (4096, 8, 2), (5120, 8, 3), (6144, 8, 3), (6144, 2, 2), (6144, 1, 1)],
)
def test_serverless_vcpus_follow_memory_without_a_cpu_quota(limit_mib, cores, vcpus):
    """1 vCPU per 1769 MB (Lambda's rule), rounded, at least 1, at most the cores there are."""
    found = sizing.serverless(limit_mib * MIB, None, cores)
    assert found is not None and (found.memory_limit, found.vcpus) == (limit_mib * MIB, vcpus)
    assert "1769 MB" in found.vcpus_from


def test_serverless_vcpus_come_from_the_cpu_quota_where_there_is_one():
    found = sizing.serverless(6144 * MIB, 1.0, 1)  # cores already counts the quota (cpu_count)
    assert found is not None and found.vcpus == 1 and found.vcpus_from == "cgroup CPU quota 1"


@pytest.mark.parametrize("limit", [None, 6144 * MIB + 1, 8 * GB, 64 * GB])
def test_only_a_serverless_sized_limit_is_serverless(limit):
    assert sizing.serverless(limit, None, 8) is None


def test_byoc_serverless_forces_serverless_sizing_on_or_off():
    assert sizing.serverless(2 * GB, 1.0, 1, forced=False) is None
    forced = sizing.serverless(None, None, 4, forced=True)
    assert forced is not None and (forced.memory_limit, forced.vcpus) == (None, 4)
    assert sizing.serverless(16 * GB, None, 4, forced=True) is not None


def test_serverless_plans_one_worker_with_the_vcpus_threads():
    found = sizing.serverless(6144 * MIB, None, 8)
    plan = sizing.plan(8, 0, RESNET50, 6 * GB, serverless=found)
    assert (plan.workers, plan.threads) == (1, 3)
    assert plan.reason.startswith("serverless (memory limit 6144 MiB): one worker, 3 threads (1 vCPU per 1769 MB")
    # Under --memory 2g --cpus 1: one worker, one thread.
    small = sizing.plan(1, 0, RESNET50, 2 * GB, serverless=sizing.serverless(2 * GB, 1.0, 1))
    assert (small.workers, small.threads) == (1, 1)


def test_explicit_workers_and_threads_still_win_under_serverless():
    found = sizing.serverless(6144 * MIB, None, 8)
    plan = sizing.plan(8, 0, RESNET50, 6 * GB, workers=3, serverless=found)
    assert (plan.workers, plan.threads) == (3, 1)  # the 3 vCPUs shared, not the machine's 8 cores
    assert plan.reason.startswith("SAGEMAKER_MODEL_SERVER_WORKERS; serverless")
    assert sizing.plan(8, 0, RESNET50, 6 * GB, threads=2, serverless=found).threads == 2
    assert sizing.plan(8, 0, RESNET50, 6 * GB, workers=2, threads=4, serverless=found).threads == 4


def test_the_jvm_base_heap_fits_a_memory_limit(monkeypatch):
    assert [sizing.jvm_base_mb(x) for x in (None, 8 * GB, 4 * GB, 2 * GB, 1 * GB, 256 * MIB)] == [
        512,
        512,
        512,
        256,
        128,
        64,
    ]
    monkeypatch.setattr(sizing, "memory_limit", lambda: 2 * GB)
    assert sizing.jvm_heap_mb(4 * MIB, 1) == 256 + 2 * 4  # --memory 2g, one worker, 4 MB bodies
    monkeypatch.setattr(sizing, "memory_limit", lambda: 1 * GB)
    assert sizing.jvm_heap_mb(4 * MIB, 1) == 136  # the smallest serverless size


def test_serverless_body_limit_is_4_mb_unless_the_variable_says_otherwise():
    assert ServeConfig.from_env({}).serverless is None
    cfg = ServeConfig.from_env({}).for_serverless()
    assert (cfg.max_request_bytes, cfg.serverless) == (4 * MIB, True)
    told = ServeConfig.from_env({"SAGEMAKER_MAX_PAYLOAD_IN_MB": "2"}).for_serverless()
    assert told.max_request_bytes == 2 * MIB
    assert ServeConfig.from_env({"BYOC_SERVERLESS": "True"}).serverless is True
    assert ServeConfig.from_env({"BYOC_SERVERLESS": "false"}).serverless is False
    with pytest.raises(ConfigError, match="BYOC_SERVERLESS='1' must be true or false"):
        ServeConfig.from_env({"BYOC_SERVERLESS": "1"})
