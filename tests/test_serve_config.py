"""Serving settings (byoc.serve.config): BYOC_PRECISION. The other settings' tests are with the
sizing they feed (tests/test_serve_sizing.py)."""

from __future__ import annotations

import pytest

from byoc.core.errors import ConfigError
from byoc.serve.config import Precision, ServeConfig


@pytest.mark.parametrize(
    "raw, expected",
    [("", None), ("  ", None), ("int8", Precision.INT8), ("FP32", Precision.FP32), (" Int8 ", Precision.INT8)],
)
def test_precision_is_read_in_any_case(raw, expected):
    assert ServeConfig.from_env({"BYOC_PRECISION": raw}).precision is expected
    assert ServeConfig.from_env({}).precision is None


@pytest.mark.parametrize("raw", ["fp16", "int4", "1"])
def test_an_unknown_precision_is_a_one_line_config_error(raw):
    with pytest.raises(ConfigError, match=r"BYOC_PRECISION=.* must be int8 or fp32") as err:
        ServeConfig.from_env({"BYOC_PRECISION": raw})
    assert "\n" not in str(err.value)


def test_the_printed_config_names_the_precision():
    assert ServeConfig.from_env({"BYOC_PRECISION": "int8"}).describe()["precision"] == "int8"
