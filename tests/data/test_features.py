"""Candle features: values worked by hand, and causality as a property."""

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from chaosfm.data import candle_features, symlog, validate


def frame_from(close, spread, body, volume):
    close = np.asarray(close, dtype=float)
    open_ = close * (1 - np.asarray(body))
    high = np.maximum(open_, close) * (1 + np.asarray(spread))
    low = np.minimum(open_, close) * (1 - np.asarray(spread))
    return validate(pd.DataFrame({
        "timestamp": np.arange(len(close)), "open": open_, "high": high, "low": low,
        "close": close, "volume": np.asarray(volume, dtype=float),
    }))


def test_values_by_hand():
    frame = pd.DataFrame({
        "timestamp": [0, 1, 2],
        "open": [10.0, 10.0, 12.0],
        "high": [11.0, 12.5, 12.0],
        "low": [9.0, 9.5, 10.0],
        "close": [10.0, 12.0, 11.0],
        "volume": [1.0, 2.0, 3.0],
    })
    out = candle_features(validate(frame), vol_window=2, volume_window=2)
    row = out.iloc[1]
    assert np.isclose(row["log_return"], np.log(1.2))
    assert np.isclose(row["symlog_return"], np.log1p(100 * np.log(1.2)))
    assert np.isclose(row["body"], 0.2) and np.isclose(row["upper_wick"], 0.05)
    assert np.isclose(row["lower_wick"], 0.05) and np.isclose(row["range"], 0.3)
    assert np.isclose(out.iloc[2]["realized_vol"], np.sqrt((np.log(1.2) ** 2 + np.log(11 / 12) ** 2) / 2))
    z = (np.log1p(3) - np.mean(np.log1p([2, 3]))) / np.std(np.log1p([2, 3]), ddof=1)
    assert np.isclose(out.iloc[2]["volume_z"], z)
    assert out.iloc[0][["log_return", "body"]].isna().all()


def test_symlog_is_odd_and_monotone():
    x = np.linspace(-50, 50, 101)
    assert np.allclose(symlog(-x), -symlog(x))
    assert np.all(np.diff(symlog(x)) > 0)


def test_constant_volume_gives_zero_z():
    out = candle_features(frame_from(100 + np.arange(30.0), [0.01] * 30, [0.0] * 30, [0.0] * 30))
    assert (out["volume_z"].dropna() == 0).all() and out["volume_z"].notna().sum() == 11


@settings(max_examples=60, deadline=None)
@given(
    st.integers(30, 60).flatmap(lambda n: st.tuples(
        st.lists(st.floats(-0.08, 0.08), min_size=n, max_size=n),
        st.lists(st.floats(0, 0.03), min_size=n, max_size=n),
        st.lists(st.floats(-0.02, 0.02), min_size=n, max_size=n),
        st.lists(st.floats(0, 1e6), min_size=n, max_size=n),
        st.integers(1, n - 2),
        st.integers(0, 2**31 - 1),
    ))
)
def test_changing_rows_after_t_never_changes_features_at_t(args):
    returns, spread, body, volume, t, seed = args
    close = 100 * np.exp(np.cumsum(returns))
    original = candle_features(frame_from(close, spread, body, volume), vol_window=5, volume_window=5)
    rng = np.random.default_rng(seed)
    tail = len(close) - t - 1
    close2 = close.copy()
    close2[t + 1:] = close[t] * np.exp(np.cumsum(rng.normal(0, 0.05, tail)))
    spread2 = np.r_[spread[: t + 1], rng.uniform(0, 0.05, tail)]
    body2 = np.r_[body[: t + 1], rng.uniform(-0.03, 0.03, tail)]
    volume2 = np.r_[volume[: t + 1], rng.uniform(0, 1e7, tail)]
    changed = candle_features(frame_from(close2, spread2, body2, volume2), vol_window=5, volume_window=5)
    columns = [c for c in original.columns if c not in ("asset", "timestamp")]
    np.testing.assert_array_equal(
        original[columns].to_numpy()[: t + 1], changed[columns].to_numpy()[: t + 1]
    )


def test_a_close_only_frame_gets_its_returns_and_nan_candle_shapes():
    rng = np.random.default_rng(3)
    n = 40
    full = frame_from(100 * np.exp(np.cumsum(0.01 * rng.standard_normal(n))), np.full(n, 0.01),
                      0.005 * rng.standard_normal(n), rng.uniform(1, 2, n))
    close_only = validate(full[["asset", "timestamp", "close"]])
    both, alone = candle_features(full), candle_features(close_only)
    assert list(alone.columns) == list(both.columns)
    for name in ("log_return", "symlog_return", "realized_vol"):
        np.testing.assert_array_equal(alone[name].to_numpy(), both[name].to_numpy())
    assert alone[["body", "upper_wick", "lower_wick", "range", "volume_z"]].isna().all().all()
    with_volume = candle_features(validate(full[["asset", "timestamp", "close", "volume"]]))
    np.testing.assert_array_equal(with_volume["volume_z"].to_numpy(), both["volume_z"].to_numpy())
