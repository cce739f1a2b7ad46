import json

import pytest

from byoc.contract import TrainConfig, _cli_overrides
from byoc.errors import ConfigError


def test_sagemaker_sends_strings():
    cfg = TrainConfig.from_dict({"epochs": "2", "batch-size": "16", "lr": "0.001", "pretrained": "true",
                                 "freeze-backbone": "False", "arch": "resnet18"})
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.pretrained, cfg.freeze_backbone, cfg.arch) == (
        2, 16, 0.001, True, False, "resnet18")


def test_typed_values_from_toolkit_json_decoding_and_snake_case():
    cfg = TrainConfig.from_dict({"epochs": 3, "batch_size": 8, "lr": 1e-4, "pretrained": False, "image_size": 64})
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.pretrained, cfg.image_size) == (3, 8, 1e-4, False, 64)


def test_double_encoded_string_from_sdk():
    assert TrainConfig.from_dict({"arch": json.dumps("resnet34")}).arch == "resnet34"


def test_sagemaker_and_tuning_bookkeeping_ignored():
    cfg = TrainConfig.from_dict({"sagemaker_program": "x.py", "_tuning_objective_metric": "val_accuracy", "epochs": "1"})
    assert cfg.epochs == 1


def test_unknown_name_lists_valid_ones():
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_dict({"epoch": "2"})
    msg = str(err.value)
    assert "epoch" in msg and "batch-size" in msg and "image-size" in msg


@pytest.mark.parametrize("values, fragment", [
    ({"epochs": "two"}, "epochs='two' must be an integer"),
    ({"epochs": "1.5"}, "must be an integer"),
    ({"lr": "fast"}, "must be a number"),
    ({"pretrained": "maybe"}, "true or false"),
    ({"epochs": "0"}, "must be >= 1"),
    ({"lr": "-1"}, "must be > 0"),
    ({"amp": "fp8"}, "not one of"),
])
def test_bad_values(values, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        TrainConfig.from_dict(values)


def test_cli_overrides_forms():
    assert _cli_overrides(["--epochs", "5", "--lr=0.1", "--no-pretrained", "--freeze-backbone"]) == {
        "epochs": "5", "lr": "0.1", "pretrained": "false", "freeze-backbone": "true"}
    with pytest.raises(ConfigError):
        _cli_overrides(["epochs"])
