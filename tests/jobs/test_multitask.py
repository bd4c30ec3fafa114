"""``chaosfm multitask``'s config: the cutoff resolved to rows, settings handed to the library, errors naming the key."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chaosfm._config import ConfigError, parse_config
from chaosfm.data import validate
from chaosfm.jobs.multitask import MultitaskRunConfig, prepare, train_head
from chaosfm.train import multitask_batches, prepare_multitask_data

ROWS = 900
STAMPS = pd.bdate_range("2001-01-01", periods=ROWS)


def synthetic_frame(rows=ROWS, seed=0, assets=("a",)):
    parts = []
    for index, asset in enumerate(assets):
        rng = np.random.default_rng([seed, index])
        vol = 0.01 * np.exp(np.cumsum(rng.normal(0, 0.05, rows)))  # wandering volatility
        close = 100 * np.exp(np.cumsum(vol * rng.standard_normal(rows)))
        open_ = close * np.exp(rng.normal(0, 0.002, rows))
        parts.append(pd.DataFrame({
            "asset": asset, "timestamp": STAMPS[:rows],
            "open": open_, "high": np.maximum(open_, close) * 1.003, "low": np.minimum(open_, close) * 0.997,
            "close": close, "volume": rng.uniform(1e5, 1e6, rows),
        }))
    return validate(pd.concat(parts, ignore_index=True))


def tiny_config(**changes):
    settings = {
        "data": "synthetic", "horizon": 20, "vol_horizon": 10, "threshold": 0.02,
        "cutoff": str(STAMPS[699].date()),
        "val_fraction": 0.2, "embargo": 3, "segment_length": 16, "burn_in": 8, "causal_checks": 2,
        "model": {"d_model": 16, "n_layers": 1, "d_state": 8, "head_dim": 8, "chunk_size": 8},
        "train": {"steps": 3, "batch_size": 4, "tbptt_segments": 2, "warmup_steps": 1, "log_every": 1},
    }
    settings.update(changes)
    return parse_config(MultitaskRunConfig, settings, "test")


def test_settings_carry_the_config_keys_the_library_reads():
    config = tiny_config()
    settings = config.settings
    assert settings.window == 16 * 2 == config.window  # segment_length * train.tbptt_segments
    assert (settings.horizon, settings.vol_horizon, settings.threshold) == (20, 10, 0.02)
    assert (settings.val_fraction, settings.embargo, settings.burn_in, settings.causal_checks) == (0.2, 3, 8, 2)


def test_the_cutoff_date_is_each_assets_last_row_before_it():
    frame = synthetic_frame(assets=("a", "b"))
    config = tiny_config()
    data = prepare(frame, config)
    assert {asset: cut for asset, (_, cut) in data.boundaries.items()} == {"a": 699, "b": 699}
    # The same as the library given those rows: the job only resolves the fence.
    direct = prepare_multitask_data(frame, config.settings, {"a": 699, "b": 699})
    assert direct.boundaries == data.boundaries and direct.trained_through == data.trained_through
    assert direct.scaler == data.scaler and direct.targets == data.targets
    # With no cutoff: the one default of every command, 80% of each asset's rows.
    default = prepare(frame, tiny_config(cutoff=None))
    assert {asset: cut for asset, (_, cut) in default.boundaries.items()} == {"a": 719, "b": 719}


def test_config_errors_name_the_key():
    frame = synthetic_frame()
    with pytest.raises(ConfigError, match="cutoff"):
        prepare(frame, tiny_config(cutoff="2001-06-01"))
    long = tiny_config(segment_length=400)
    with pytest.raises(ConfigError, match="segment_length"):
        multitask_batches(prepare(frame, long), long.settings, long.train.batch_size, long.train.seed)
    with pytest.raises(ConfigError, match="horizont"):
        parse_config(MultitaskRunConfig, {"horizont": 90}, "test")
    # Its held-out rows are the validation split: train.val_fraction would be a second, unread key.
    twice = tiny_config(train={"steps": 3, "val_fraction": 0.3})
    with pytest.raises(ConfigError, match=r"train\.val_fraction: 0.3 is not read by multitask.*top-level val_fraction"):
        train_head(twice, Path("unused"), frame)
