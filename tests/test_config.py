"""Configs: a typo names the key and the allowed keys; dotted overrides; the one integer validator."""

import numpy as np
import pytest
from pydantic import BaseModel, ConfigDict

from chaosfm._config import ConfigError, read_config, require_int
from chaosfm.jobs.evaluate import EvaluateConfig


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


class Train(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: int = 0
    steps: int = 10


class Run(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "run"
    train: Train = Train()


def test_dotted_overrides_set_nested_keys_skip_none_and_leave_the_file_alone(tmp_path):
    path = tmp_path / "run.yaml"
    text = "name: first\ntrain: {steps: 5}\n"
    path.write_text(text)
    config = read_config(Run, path, {"train.seed": 3, "name": None, "train.steps": None})
    assert config.train.seed == 3 and config.train.steps == 5  # the file's other nested key stays
    assert config.name == "first"  # None: a flag that was not given
    assert path.read_text() == text
    # No file: the overrides alone; a dotted key creates its section.
    assert read_config(Run, None, {"train.steps": 7}).train == Train(steps=7)
    # A dotted typo is named like a file's typo, with the keys allowed there.
    with pytest.raises(ConfigError, match=r"flags: unknown key 'train.sed'.*seed, steps"):
        read_config(Run, None, {"train.sed": 1})
    with pytest.raises(ConfigError, match=r"run.yaml: key 'train.seed'"):
        read_config(Run, path, {"train.seed": "three"})


def test_require_int_is_the_one_integer_rule():
    assert require_int(3, "steps") == 3 and type(require_int(np.int64(2), "n", 2)) is int
    assert require_int(0, "embargo", 0) == 0
    with pytest.raises(ConfigError, match=r"^steps must be positive \(>= 1\), got 0$"):
        require_int(0, "steps")
    with pytest.raises(ConfigError, match=r"^horizon must be >= 2, got 1$"):
        require_int(1, "horizon", 2)
    for bad in (2.0, "3", True, None):
        with pytest.raises(ConfigError, match=rf"^n must be an integer >= 1, got {bad!r}$".replace("(", r"\(")):
            require_int(bad, "n")
    assert issubclass(ConfigError, ValueError)


def _alias_bomb(levels: int) -> str:
    """``levels`` anchors, each a list of ten aliases of the one before: 10**levels strings."""
    lines = ["    a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"    a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "datasets:\n- name: sp500\n  options:\n" + "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_before_it_is_expanded(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(_alias_bomb(6))  # 10**6 strings once expanded (each level multiplies by ten); 300 bytes on disk
    with pytest.raises(ConfigError, match=r"bomb.yaml: its aliases expand to more than 100,000 values"):
        read_config(EvaluateConfig, path)
    path.write_text("datasets: &d\n- name: sp500\n- *d\n")
    with pytest.raises(ConfigError, match=r"bomb.yaml: line 1: an alias refers to a value that contains it"):
        read_config(EvaluateConfig, path)
    path.write_text(_alias_bomb(3))  # a thousand values: aliases within reason still read
    config = read_config(EvaluateConfig, path)
    assert config.datasets[0].options["a2"] == [[["lol"] * 10] * 10] * 10


def test_oversized_and_non_utf8_files_are_named_and_quoted_values_are_cut(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("title: '" + "x" * (1 << 20) + "'\n")
    with pytest.raises(ConfigError, match=r"big.yaml: larger than 1,048,576 bytes"):
        read_config(EvaluateConfig, path)
    path = tmp_path / "latin1.yaml"
    path.write_bytes("datasets: [{name: sp500}]\ntitle: 'Gödel'\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1.yaml: not UTF-8 text \(byte 35"):
        read_config(EvaluateConfig, path)
    path = tmp_path / "long.yaml"
    path.write_text("datasets: '" + "y" * 50_000 + "'\n")
    with pytest.raises(ConfigError) as caught:
        read_config(EvaluateConfig, path)
    message = str(caught.value)
    assert "key 'datasets': Input should be a valid list" in message
    assert "... (50,002 characters)" in message and len(message) < 500
    path.write_text("datasets: {" + ", ".join(f"k{i}: v" for i in range(5000)) + "}\n")
    with pytest.raises(ConfigError) as caught:
        read_config(EvaluateConfig, path)
    assert "(got {'k0': 'v', 'k1': 'v'," in str(caught.value) and len(str(caught.value)) < 500
