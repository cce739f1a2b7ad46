import json
import re
import subprocess

import pytest

from byoc.core.errors import ConfigError
from byoc.training.contract import TrainConfig


def test_sagemaker_sends_strings():
    cfg = TrainConfig.from_dict(
        {
            "epochs": "2",
            "batch-size": "16",
            "lr": "0.001",
            "pretrained": "true",
            "freeze-backbone": "False",
            "arch": "resnet18",
        }
    )
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.pretrained, cfg.freeze_backbone, cfg.arch) == (
        2,
        16,
        0.001,
        True,
        False,
        "resnet18",
    )


def test_typed_values_from_toolkit_json_decoding_and_snake_case():
    cfg = TrainConfig.from_dict({"epochs": 3, "batch_size": 8, "lr": 1e-4, "pretrained": False, "image_size": 64})
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.pretrained, cfg.image_size) == (3, 8, 1e-4, False, 64)


def test_double_encoded_string_from_sdk():
    assert TrainConfig.from_dict({"arch": json.dumps("resnet34")}).arch == "resnet34"


def test_sagemaker_and_tuning_bookkeeping_ignored():
    cfg = TrainConfig.from_dict(
        {"sagemaker_program": "x.py", "_tuning_objective_metric": "val_accuracy", "epochs": "1"}
    )
    assert cfg.epochs == 1


def test_unknown_name_lists_valid_ones():
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_dict({"epoch": "2"})
    msg = str(err.value)
    assert "epoch" in msg and "batch-size" in msg and "image-size" in msg


@pytest.mark.parametrize(
    "values, fragment",
    [
        ({"epochs": "two"}, "epochs='two' must be an integer"),
        ({"epochs": "1.5"}, "must be an integer"),
        ({"lr": "fast"}, "must be a number"),
        ({"pretrained": "maybe"}, "true or false"),
        ({"epochs": "0"}, "must be >= 1"),
        ({"lr": "-1"}, "must be > 0"),
        ({"amp": "fp8"}, "not one of"),
    ],
)
def test_bad_values(values, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        TrainConfig.from_dict(values)


def _in_subprocess(base, code):
    """sagemaker-training reads SAGEMAKER_BASE_DIR at import: use a fresh interpreter."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "SAGEMAKER_BASE_DIR": str(base)}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout


def test_no_config_files_gets_local_defaults(tmp_path):
    (tmp_path / "input" / "data" / "training").mkdir(parents=True)
    out = _in_subprocess(
        tmp_path,
        "from byoc.training import contract; contract.prepare(); job, cfg = contract.load(['--epochs', '3']);"
        "print(job.hosts == [job.current_host], sorted(job.channels), cfg.epochs, job.checkpoint_dir)",
    )
    assert out.split() == ["True", "['training']", "3", str(tmp_path / "checkpoints")]
    assert (tmp_path / "output" / "data").is_dir()


def test_sagemaker_config_files_are_read(tmp_path):
    config = tmp_path / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(
        json.dumps({"epochs": "7", "arch": "resnet18", "sagemaker_region": '"eu-west-1"'})
    )
    (config / "resourceconfig.json").write_text(
        json.dumps({"current_host": "algo-2", "hosts": ["algo-2", "algo-1"], "network_interface_name": "eth7"})
    )
    (config / "inputdataconfig.json").write_text(json.dumps({"train": {}, "validation": {}, "test": {}}))
    out = _in_subprocess(
        tmp_path,
        "from byoc.training import contract; job, cfg = contract.load(['--lr', '0.5']);"
        "print(job.hosts, job.node_rank, job.master_host, job.network_interface, cfg.epochs, cfg.lr, cfg.arch)",
    )
    assert out.split() == ["['algo-1',", "'algo-2']", "1", "algo-1", "eth7", "7", "0.5", "resnet18"]


def test_the_command_line_takes_every_form_over_the_config_files(tmp_path):
    """The image's own command line (byoc.training.hp_args) over hyperparameters.json: the forms a user
    types and the one sagemaker-training passes (`--pretrained False`), a bad value naming its option."""
    config = tmp_path / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps({"epochs": "7", "augment": "true"}))
    argv = [
        "--epochs",
        "2",
        "--no-augment",
        "--hp",
        "lr=0.5",
        "--pretrained",
        "False",
        "--_tuning_objective_metric",
        "x",
    ]
    out = _in_subprocess(
        tmp_path,
        f"from byoc.training import contract; job, cfg = contract.load({argv!r});"
        "print(cfg.epochs, cfg.augment, cfg.lr, cfg.pretrained)",
    )
    assert out.split() == ["2", "False", "0.5", "False"]
    code = "from byoc.training import contract; contract.load(['--epochs', 'two'])"
    with pytest.raises(subprocess.CalledProcessError) as failed:
        _in_subprocess(tmp_path, code)
    assert "ConfigError: --epochs two: must be an integer" in failed.value.stderr


def test_pipe_mode_is_refused_with_reason(tmp_path):
    import subprocess

    config = tmp_path / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text("{}")
    (config / "resourceconfig.json").write_text(json.dumps({"current_host": "algo-1", "hosts": ["algo-1"]}))
    (config / "inputdataconfig.json").write_text(json.dumps({"training": {"TrainingInputMode": "Pipe"}}))
    with pytest.raises(subprocess.CalledProcessError) as err:
        _in_subprocess(tmp_path, "from byoc.training import contract; contract.load([])")
    assert "Pipe input mode" in err.value.stderr


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"amp": "bogus"}, "amp='bogus' is not one of auto, bf16, fp16, off"),
        ({"channels_last": "sometimes"}, "channels-last='sometimes' is not one of auto, true, false"),
        ({"optimizer": "lion"}, "not one of adamw, sgd, adam"),
        ({"epochs": 0}, "epochs=0 must be >= 1"),
        ({"epochs": "3"}, "epochs='3' must be an integer"),
        ({"pretrained": "yes"}, "pretrained='yes' must be true or false"),
        ({"lr": 0.0}, "lr=0.0 must be > 0"),
    ],
)
def test_every_train_config_is_validated_where_it_is_made(kwargs, message):
    """The constructor validates as from_dict does: no TrainConfig holds a value the loop cannot use."""
    from byoc.core.errors import ConfigError

    with pytest.raises(ConfigError, match=re.escape(message)):
        TrainConfig(**kwargs)


def test_train_config_settings_are_typed_and_serialise_as_their_strings():
    from byoc.training.contract import Amp, Optimizer, Switch

    cfg = TrainConfig.from_dict(
        {"amp": "BF16", "channels-last": "true", "pin-memory": "0", "optimizer": "SGD", "lr": "1"}
    )
    assert (cfg.amp, cfg.channels_last, cfg.pin_memory, cfg.optimizer) == (
        Amp.BF16,
        Switch.ON,
        Switch.OFF,
        Optimizer.SGD,
    )
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.channels_last.resolve(auto=False) is True and Switch.AUTO.resolve(auto=True) is True
    doc = cfg.to_dict()
    assert (doc["amp"], doc["channels-last"], doc["optimizer"]) == ("bf16", "true", "sgd")
    assert TrainConfig.from_dict(json.loads(json.dumps(doc))) == cfg
