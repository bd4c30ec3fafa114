"""Forecaster: the frame API over Nixtla, Chronos and chaosfm layouts."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pandas as pd
import pytest

from chaosfm._config import ConfigError
from chaosfm.data import DataError, MissingColumnError, NonPositivePriceError, load, validate
from chaosfm.forecasters import AutoRegressive, Forecaster, Garch, series_key

LEVELS = (0.1, 0.5, 0.9)


@pytest.fixture(scope="module")
def closes():
    """The last 400 daily closes of sp500 and nasdaq, chaosfm layout ``asset, timestamp, close``."""
    frame = load("sp500,nasdaq")
    parts = [part.iloc[-400:] for _, part in frame.groupby("asset", sort=False)]
    return pd.concat(parts, ignore_index=True)[["asset", "timestamp", "close"]]


@pytest.fixture(scope="module")
def lorenz():
    """300 rows of lorenz63: ``asset, timestamp, x0, x1, x2``, states of both signs."""
    return load("lorenz63", length=300)


def _nixtla(frame):
    return frame.rename(columns={"asset": "unique_id", "timestamp": "ds", "close": "y"})


def _chronos(frame):
    return frame.rename(columns={"asset": "item_id", "close": "target"})


def _reference(forecaster, frame, horizon, num_samples, seed):
    """Mean and quantiles ``(H, 1 + Q)`` of each asset, straight from the forecaster's protocol."""
    checked = validate(frame)
    forecaster.fit(checked)
    out = {}
    for asset, part in checked.groupby("asset", sort=False):
        part = part.reset_index(drop=True)
        samples = forecaster.forecast(part, horizon, num_samples, key=series_key(jax.random.key(seed), asset)).samples
        out[asset] = np.column_stack([samples[:, :, 0].mean(axis=0), np.quantile(samples[:, :, 0], LEVELS, axis=0).T])
    return out


def test_the_three_layouts_give_the_numbers_of_the_forecaster_itself(closes):
    sp500 = closes[closes["asset"] == "sp500"].reset_index(drop=True)
    tables = {
        name: Forecaster.from_name("garch").fit(df).predict(df, 4, LEVELS, num_samples=64, seed=3)
        for name, df in (("chaosfm", sp500), ("nixtla", _nixtla(sp500)), ("chronos", _chronos(sp500)))
    }
    assert list(tables["nixtla"].columns) == ["unique_id", "ds", "mean", "0.1", "0.5", "0.9"]
    assert list(tables["chronos"].columns) == ["item_id", "timestamp", "mean", "0.1", "0.5", "0.9"]
    assert list(tables["chaosfm"].columns) == ["asset", "timestamp", "mean", "0.1", "0.5", "0.9"]
    values = {name: table[["mean", "0.1", "0.5", "0.9"]].to_numpy() for name, table in tables.items()}
    np.testing.assert_array_equal(values["nixtla"], values["chaosfm"])
    np.testing.assert_array_equal(values["chronos"], values["chaosfm"])
    expected = _reference(Garch(), sp500, 4, 64, 3)["sp500"]
    np.testing.assert_allclose(values["chaosfm"], expected, rtol=1e-12)
    # Whole candles forecast the close: the same numbers again.
    candles = load("sp500").iloc[-400:].reset_index(drop=True)
    whole = Forecaster.from_name("garch").fit(candles).predict(candles, 4, LEVELS, num_samples=64, seed=3)
    np.testing.assert_array_equal(whole[["mean", "0.1", "0.5", "0.9"]].to_numpy(), values["chaosfm"])


def test_quantile_columns_are_monotone_and_named_like_chronos(closes):
    df = _nixtla(closes)
    levels = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95)
    table = Forecaster.from_name("ar", order=3).fit(df).predict(df, 6, levels, num_samples=200, seed=0)
    names = ["0.05", "0.1", "0.25", "0.5", "0.75", "0.9", "0.95"]
    assert list(table.columns) == ["unique_id", "ds", "mean", *names]
    q = table[names].to_numpy()
    assert np.all(np.diff(q, axis=1) >= 0)
    assert np.all(q[:, 0] < q[:, -1])  # 200 samples of a stochastic model are not one value


def test_timestamps_are_the_business_days_after_the_last_date(closes):
    sp500 = _nixtla(closes[closes["asset"] == "sp500"])
    table = Forecaster.from_name("garch").fit(sp500).predict(sp500, 7, num_samples=16)
    last = sp500["ds"].iloc[-1]
    expected = pd.bdate_range(last + pd.Timedelta(days=1), periods=7)
    assert list(table["ds"]) == list(expected)
    assert (table["ds"] > last).all() and (table["ds"].dt.day_of_week < 5).all()


def test_two_series_batched_equal_two_single_calls(closes):
    df = _nixtla(closes)
    model = Forecaster.from_name("garch").fit(df)
    both = model.predict(df, 5, LEVELS, num_samples=32, seed=7)
    single = pd.concat(
        [model.predict(df[df["unique_id"] == name], 5, LEVELS, num_samples=32, seed=7) for name in ("nasdaq", "sp500")],
        ignore_index=True,
    )
    assert sorted(both["unique_id"].unique()) == ["nasdaq", "sp500"] and len(both) == 10
    pd.testing.assert_frame_equal(both.sort_values(["unique_id", "ds"]).reset_index(drop=True), single)
    # Each series is the forecaster's own forecast of that series (fitted on both, per-asset GARCH).
    expected = _reference(Garch(), closes, 5, 32, 7)
    for name in ("nasdaq", "sp500"):
        got = both[both["unique_id"] == name][["mean", "0.1", "0.5", "0.9"]].to_numpy()
        np.testing.assert_allclose(got, expected[name], rtol=1e-12)


def test_a_seed_and_its_key_give_the_same_forecast_and_other_seeds_differ(closes):
    df = _chronos(closes[closes["asset"] == "sp500"])
    model = Forecaster.from_name("garch").fit(df)
    by_seed = model.predict(df, 3, num_samples=32, seed=5)
    by_key = model.predict(df, 3, num_samples=32, key=jax.random.key(5))
    pd.testing.assert_frame_equal(by_seed, by_key)
    assert not np.allclose(by_seed["mean"], model.predict(df, 3, num_samples=32, seed=6)["mean"])


def test_levels_read_y_as_a_state_variable(lorenz):
    lorenz = lorenz[["asset", "timestamp", "x0"]]
    df = lorenz.rename(columns={"asset": "unique_id", "timestamp": "ds", "x0": "y"})
    with pytest.raises(NonPositivePriceError, match=r"column 'y'.*values='levels'"):
        Forecaster.from_name("ar").fit(df)
    table = Forecaster.from_name("ar", values="levels").fit(df).predict(df, 4, LEVELS, num_samples=50, seed=1)
    # numeric timestamps continue at their spacing
    step = lorenz["timestamp"].iloc[-1] - lorenz["timestamp"].iloc[-2]
    np.testing.assert_allclose(table["ds"], lorenz["timestamp"].iloc[-1] + step * np.arange(1, 5), rtol=1e-9)
    expected = _reference(AutoRegressive(), lorenz, 4, 50, 1)["lorenz63"]
    np.testing.assert_allclose(table[["mean", "0.1", "0.5", "0.9"]].to_numpy(), expected, rtol=1e-12)


def test_a_single_series_without_id_and_integer_time():
    y = 100 * np.exp(np.cumsum(np.random.default_rng(0).normal(0, 0.01, 300)))
    df = pd.DataFrame({"ds": np.arange(10, 310), "y": y})
    table = Forecaster.from_name("random_walk").fit(df).predict(df, 3, num_samples=20)
    assert list(table.columns) == ["ds", "mean", "0.1", "0.5", "0.9"]
    assert table["ds"].tolist() == [310, 311, 312] and pd.api.types.is_integer_dtype(table["ds"])


def test_a_trajectory_with_several_columns_names_each(lorenz):
    table = Forecaster.from_name("last_value").fit(lorenz).predict(lorenz, 2, num_samples=3)
    assert list(table.columns) == ["asset", "timestamp", "column", "mean", "0.1", "0.5", "0.9"]
    assert table["column"].tolist() == ["x0", "x1", "x2"] * 2
    last = lorenz[["x0", "x1", "x2"]].iloc[-1].to_numpy()
    np.testing.assert_allclose(table["mean"].to_numpy(), np.tile(last, 2))


def test_bad_frames_raise_naming_the_columns_rows_and_rule(closes):
    model = Forecaster.from_name("garch")
    with pytest.raises(MissingColumnError, match=r"no time column in columns \['id', 'when', 'value'\].*Nixtla"):
        model.fit(pd.DataFrame({"id": ["a"], "when": ["2020-01-01"], "value": [1.0]}))
    with pytest.raises(MissingColumnError, match=r"no target column in columns \['unique_id', 'ds', 'value'\]"):
        model.fit(pd.DataFrame({"unique_id": ["a"], "ds": ["2020-01-01"], "value": [1.0]}))
    bad = _nixtla(closes).copy()
    bad.loc[17, "y"] = -1.0
    with pytest.raises(NonPositivePriceError, match=r"row 17, column 'y'.*\[rule: prices > 0\]"):
        model.fit(bad)
    bad.loc[17, "y"] = np.nan
    with pytest.raises(DataError, match=r"row 17, column 'y'.*finite"):
        model.fit(bad)
    unsorted = _chronos(closes).iloc[[1, 0, 2, 3]]
    with pytest.raises(DataError, match=r"column 'timestamp'"):
        model.fit(unsorted)
    with pytest.raises(DataError, match="DataFrame"):
        model.fit({"y": [1.0]})


def test_bad_arguments_raise_config_errors_naming_them(closes):
    df = _nixtla(closes)
    with pytest.raises(ConfigError, match="not fitted"):
        Forecaster.from_name("garch").predict(df, 3)
    with pytest.raises(ConfigError, match="unknown forecaster 'garhc'.*garch"):
        Forecaster.from_name("garhc")
    with pytest.raises(ConfigError, match=r"does not take option\(s\) \['ordr'\].*order"):
        Forecaster.from_name("ar", ordr=2)
    with pytest.raises(ConfigError, match="values must be one of prices, levels"):
        Forecaster.from_name("ar", values="returns")
    model = Forecaster.from_name("last_value").fit(df)
    with pytest.raises(ConfigError, match="h must be positive"):
        model.predict(df, 0)
    with pytest.raises(ConfigError, match=r"quantiles must lie strictly between 0 and 1, got \[1.5\]"):
        model.predict(df, 2, quantiles=(0.5, 1.5))


def test_import_chaosfm_is_light_and_exposes_forecaster():
    script = ("import sys, json, chaosfm; light = 'jax' not in sys.modules; "
              "from chaosfm.forecasters import Forecaster; "
              "print(json.dumps([light, chaosfm.Forecaster is Forecaster, 'Forecaster' in dir(chaosfm)]))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    process = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=120)
    assert process.returncode == 0, process.stderr.decode()[-2000:]
    assert json.loads(process.stdout.decode().strip().splitlines()[-1]) == [True, True, True]
