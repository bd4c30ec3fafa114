"""Configs: a typo names the key and the allowed keys."""

import pytest

from chaosfm._config import ConfigError, read_config
from chaosfm.pipelines import EvaluateConfig


def test_unknown_and_wrong_keys_are_named(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("datasets: [{name: sp500}]\nprotocol: {horizn: 5}\n")
    with pytest.raises(ConfigError, match=r"unknown key 'protocol.horizn'.*horizon"):
        read_config(EvaluateConfig, path)
    path.write_text("datasets: [{name: sp500}]\nprotocol: {horizon: -1}\n")
    with pytest.raises(ConfigError, match="protocol.horizon"):
        read_config(EvaluateConfig, path)
    path.write_text("datasets: [{name: sp500, cutof: 2010}]\n")
    with pytest.raises(ConfigError, match=r"datasets.0.cutof.*cutoff"):
        read_config(EvaluateConfig, path)


def test_flags_override_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("datasets: [{name: sp500}]\ncutoff: '2010-01-01'\n")
    config = read_config(EvaluateConfig, path, {"cutoff": "2012-01-01"})
    assert config.cutoff == "2012-01-01"
