"""Default worker and thread counts (byoc.serve.sizing) and settings (byoc.serve.config)."""

from __future__ import annotations

import pytest

from byoc.core.errors import ConfigError
from byoc.serve import sizing
from byoc.serve.config import ServeConfig

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


def test_one_worker_per_gpu():
    plan = sizing.plan(8, 4, RESNET50, 64 * GB)
    assert (plan.workers, plan.threads) == (4, 2)


def test_explicit_workers_set_threads():
    plan = sizing.plan(8, 0, RESNET50, 64 * GB, workers=8)
    assert (plan.workers, plan.threads, plan.reason) == (8, 1, "SAGEMAKER_MODEL_SERVER_WORKERS")


def test_machine_probes_are_sane():
    assert sizing.cpu_count() >= 1 and sizing.memory_available() > 0


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
    assert (default.batch_size, default.max_batch_delay_ms, default.access_log) == (4, 0, False)
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
