"""Bad configs fail before training starts, with a message naming the key."""

import numpy as np
import pytest

from chaosfm._config import ConfigError
from chaosfm.jobs.train import train_code_model
from chaosfm.train import CodeData, parse_train_run_config

from ._data import periodic_data, tiny_config


def _parse(**changes):
    config = tiny_config()
    for dotted, value in changes.items():
        section, name = dotted.split("__")
        config[section][name] = value
    return parse_train_run_config(config)


@pytest.mark.parametrize(
    "changes, named",
    [
        ({"model__dmodel": 64}, "model.dmodel"),
        ({"train__setps": 10}, "train.setps"),
        ({"model__context_length": "long"}, "model.context_length"),
        ({"train__learning_rate": -1.0}, "train.learning_rate"),
        ({"model__kind": "lstm"}, "model.kind"),
        ({"model__n_heads": 3}, "model.n_heads"),
        ({"model__size": "huge"}, "model.size"),
    ],
)
def test_unknown_keys_wrong_types_and_bad_values_name_the_key(changes, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        _parse(**changes)


def test_unknown_key_error_lists_the_allowed_keys():
    with pytest.raises(ConfigError, match="allowed here: .*learning_rate"):
        _parse(train__lr=0.1)
    with pytest.raises(ConfigError, match="allowed here: .*d_model"):
        _parse(model__trapezoidal=True)  # a Mamba key in a GPT section


@pytest.mark.parametrize(
    "changes, data, named",
    [
        ({"model__vocab_size": 12}, None, "model.vocab_size"),
        ({"model__context_length": 900}, None, "model.context_length"),
        ({"train__tbptt_segments": 60}, None, "model.context_length"),
        ({"train__devices": 3, "train__batch_size": 4}, None, "train.devices"),
        ({"model__kind": "mamba", "model__exo_clock": True}, None, "model.exo_clock"),
    ],
)
def test_config_that_does_not_fit_the_data_fails_before_training(tmp_path, changes, data, named):
    config = tiny_config()
    for dotted, value in changes.items():
        section, name = dotted.split("__")
        config[section][name] = value
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        train_code_model(parse_train_run_config(config), tmp_path / "run", data or periodic_data())
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_codes_outside_the_vocabulary_are_refused():
    with pytest.raises(ValueError, match=r"0\.\.9"):
        CodeData(train={"a": np.array([1, 2, 10])}, vocab_size=10)
