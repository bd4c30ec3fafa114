"""Labels of the multitask head: hand-computed values, which rows they read, causal features, the purge."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chaosfm.data import (
    DataError,
    LeakageError,
    MissingColumnError,
    assign_splits,
    boundary_rows,
    check_causal,
    forward_labels,
    label_frame,
    multitask_features,
    trailing_realized_vol,
    validate,
)
from chaosfm.data._labels import EMBARGOED, PURGED, UNLABELLED, WARMUP

CLOSE = np.array([100.0, 110.0, 99.0, 120.0, 130.0, 91.0])


def candles(close, spread=None, volume=None, start="2020-01-01"):
    close = np.asarray(close, dtype=float)
    spread = np.full(close.size, 0.01) if spread is None else np.asarray(spread)
    return validate(pd.DataFrame({
        "timestamp": pd.date_range(start, periods=close.size, freq="D"),
        "open": close, "high": close * (1 + spread), "low": close * (1 - spread), "close": close,
        "volume": np.full(close.size, 1e6) if volume is None else np.asarray(volume, dtype=float),
    }))


def test_labels_by_hand():
    labels = forward_labels(CLOSE, horizon=2, threshold=0.05, vol_horizon=2)
    # ln(99/100) = -0.010 flat, ln(120/110) = 0.087 up, ln(130/99) = 0.272 up, ln(91/120) = -0.277 down
    np.testing.assert_allclose(
        labels["forward_return"][:4], [np.log(0.99), np.log(12 / 11), np.log(130 / 99), np.log(91 / 120)]
    )
    assert labels["direction"].tolist() == [1, 2, 2, 0, -1, -1]
    vol0 = np.sqrt(252 * (np.log(1.1) ** 2 + np.log(0.9) ** 2) / 2)
    vol3 = np.sqrt(252 * (np.log(130 / 120) ** 2 + np.log(91 / 130) ** 2) / 2)
    assert np.isclose(labels["forward_vol"][0], vol0) and np.isclose(labels["forward_vol"][3], vol3)
    assert np.isnan(labels["forward_return"][4:]).all() and np.isnan(labels["forward_vol"][4:]).all()


def test_span_is_the_longer_of_the_two_horizons():
    labels = forward_labels(CLOSE, horizon=1, threshold=0.0, vol_horizon=3)
    # span 3: only rows 0..2 see all of t+1..t+3
    assert labels["direction"].tolist() == [2, 0, 2, -1, -1, -1]  # 110/100 up, 99/110 down, 120/99 up
    assert np.isclose(labels["forward_vol"][2], np.sqrt(252 * np.mean(np.diff(np.log(CLOSE[2:])) ** 2)))


def test_threshold_is_strict():
    close = np.exp(np.cumsum([0.0, 0.049, 0.051, -0.051, -0.049, 0.0, 0.0]))
    assert forward_labels(close, horizon=1, threshold=0.05, vol_horizon=2)["direction"][:4].tolist() == [1, 2, 0, 1]


@settings(max_examples=60, deadline=None)
@given(st.integers(20, 50).flatmap(lambda n: st.tuples(
    st.lists(st.floats(-0.05, 0.05), min_size=n, max_size=n),
    st.integers(1, 8), st.integers(2, 8), st.integers(0, n - 1), st.integers(0, 2**31 - 1),
)))
def test_labels_read_only_rows_t_to_t_plus_span(args):
    returns, horizon, vol_horizon, t, seed = args
    close = 100 * np.exp(np.cumsum(returns))
    span = max(horizon, vol_horizon)
    base = forward_labels(close, horizon=horizon, threshold=0.02, vol_horizon=vol_horizon)
    rng = np.random.default_rng(seed)
    outside = close * np.exp(rng.normal(0, 0.1, close.size))
    outside[t : t + span + 1] = close[t : t + span + 1]  # everything but rows t..t+span changed
    changed = forward_labels(outside, horizon=horizon, threshold=0.02, vol_horizon=vol_horizon)
    for name in ("forward_return", "forward_vol", "direction"):
        np.testing.assert_array_equal(base[name][t], changed[name][t])
    if t + span < close.size:
        # and the label does read the future: the close H rows ahead and each of the V returns after t
        bumped = close.copy()
        bumped[t + horizon] *= 1.3
        assert forward_labels(bumped, horizon=horizon, vol_horizon=vol_horizon)["forward_return"][t] != base["forward_return"][t]
        k = int(rng.integers(1, vol_horizon + 1))
        bumped = close.copy()
        bumped[t + k] *= 1.3
        assert forward_labels(bumped, horizon=horizon, vol_horizon=vol_horizon)["forward_vol"][t] != base["forward_vol"][t]


SMALL = {"momentum_windows": (3, 5), "vol_windows": (4,), "high_window": 6}


def small_features(frame):
    return multitask_features(frame, **SMALL)


@settings(max_examples=40, deadline=None)
@given(st.integers(25, 45).flatmap(lambda n: st.tuples(
    st.lists(st.floats(-0.08, 0.08), min_size=n, max_size=n),
    st.lists(st.floats(0.001, 0.03), min_size=n, max_size=n),
    st.integers(1, n - 2), st.integers(0, 2**31 - 1),
)))
def test_features_read_only_rows_up_to_t(args):
    returns, spread, t, seed = args
    close = 100 * np.exp(np.cumsum(returns))
    original = small_features(candles(close, spread))
    rng = np.random.default_rng(seed)
    close2 = close.copy()
    close2[t + 1 :] = close[t] * np.exp(np.cumsum(rng.normal(0, 0.05, close.size - t - 1)))
    spread2 = np.r_[spread[: t + 1], rng.uniform(0.001, 0.05, close.size - t - 1)]
    changed = small_features(candles(close2, spread2))
    columns = [c for c in original.columns if c not in ("asset", "timestamp")]
    assert len(columns) == 8 + 2 + 1 + 1
    np.testing.assert_array_equal(original[columns].to_numpy()[: t + 1], changed[columns].to_numpy()[: t + 1])


def test_long_horizon_features_by_hand():
    close = 100 * np.exp(np.cumsum(np.r_[0.0, np.linspace(-0.02, 0.03, 11)]))
    out = small_features(candles(close))
    t = 8
    assert np.isclose(out["momentum_5"].iloc[t], np.log(close[t] / close[t - 5]))
    assert np.isclose(out["vol_4"].iloc[t], np.sqrt(252 * np.mean(np.diff(np.log(close[t - 4 : t + 1])) ** 2)))
    assert np.isclose(out["drawdown"].iloc[t], np.log(close[t] / close[t - 5 : t + 1].max()))
    assert np.isnan(out["momentum_5"].iloc[4]) and np.isnan(out["drawdown"].iloc[4])
    np.testing.assert_allclose(trailing_realized_vol(close, 4)[t], out["vol_4"].iloc[t])


def test_check_causal_passes_causal_features_and_names_a_leaky_one():
    rng = np.random.default_rng(0)
    frame = candles(100 * np.exp(np.cumsum(rng.normal(0, 0.01, 60))))
    check_causal(small_features, frame, [20, 40])

    def leaky(f):
        out = small_features(f)
        out["centred"] = f["close"].rolling(5, center=True).mean().to_numpy()  # reads rows t+1, t+2
        return out

    with pytest.raises(LeakageError, match="centred"):
        check_causal(leaky, frame, [20, 40])

    def whole_sample_zscore(f):  # normalising with the whole series is a leak too
        out = small_features(f)
        out["z"] = ((f["close"] - f["close"].mean()) / f["close"].std()).to_numpy()
        return out

    with pytest.raises(LeakageError, match="'z'"):
        check_causal(whole_sample_zscore, frame, [30])


def test_label_frame_records_where_each_label_ends():
    a, b = candles(CLOSE), candles(CLOSE * 2, start="2021-01-01")
    a["asset"], b["asset"] = "a", "b"
    frame = pd.concat([a, b], ignore_index=True)
    out = label_frame(frame, horizon=2, threshold=0.05, vol_horizon=2)
    assert (out.loc[out["asset"] == "b", "direction"].tolist()) == [1, 2, 2, 0, -1, -1]
    assert out["label_end"].iloc[0] == frame["timestamp"].iloc[2]
    assert out["label_end"].iloc[6] == frame["timestamp"].iloc[8] and pd.isna(out["label_end"].iloc[5])


def slow_splits(n_rows, span, boundaries, embargo, warmup):
    """The purge spelt out row by row."""
    def split_of(row):
        return sum(row > b for b in boundaries)

    out = []
    for t in range(n_rows):
        if t < warmup:
            out.append(WARMUP)
        elif t + span > n_rows - 1:
            out.append(UNLABELLED)
        elif split_of(t + 1) != split_of(t + span):
            out.append(PURGED)
        elif split_of(t + 1) > 0 and t + 1 <= boundaries[split_of(t + 1) - 1] + embargo:
            out.append(EMBARGOED)
        else:
            out.append(split_of(t + 1))
    return out


def test_purge_by_hand():
    # rows 0..19, boundaries after rows 7 and 13, labels read t+1..t+3, embargo 1
    split = assign_splits(20, 3, [7, 13], embargo=1, warmup=1)
    # t=5: rows 6..8 cross row 7; t=7: rows 8..10 sit in split 1 but start in its embargo;
    # t=10: rows 11..13 end exactly on the boundary and stay; t=11: rows 12..14 cross it
    expected = [WARMUP, 0, 0, 0, 0, PURGED, PURGED, EMBARGOED, 1, 1, 1, PURGED, PURGED, EMBARGOED,
                2, 2, 2, UNLABELLED, UNLABELLED, UNLABELLED]
    assert split.tolist() == expected


@settings(max_examples=80, deadline=None)
@given(st.integers(10, 80).flatmap(lambda n: st.tuples(
    st.just(n), st.integers(1, 12), st.sets(st.integers(0, n - 2), max_size=3), st.integers(0, 4),
    st.integers(0, 5),
)))
def test_purge_drops_every_window_whose_label_crosses_a_boundary(args):
    n, span, bounds, embargo, warmup = args
    bounds = sorted(bounds)
    split = assign_splits(n, span, bounds, embargo=embargo, warmup=warmup)
    assert split.tolist() == slow_splits(n, span, bounds, embargo, warmup)
    edges = np.r_[-1, bounds, n - 1].astype(int)
    for t in np.flatnonzero(split >= 0):
        k = split[t]  # the whole label span t+1..t+span lies in split k, past the embargo after its start
        assert edges[k] < t + 1 and t + span <= edges[k + 1]
        assert k == 0 or edges[k] + embargo < t + 1
    for t in range(n):
        crosses = any(t + 1 <= b < t + span for b in bounds)
        if crosses:
            assert split[t] < 0


def test_trajectories_are_refused_by_name():
    trajectory = validate(pd.DataFrame({"timestamp": np.arange(10.0), "x0": np.sin(np.arange(10.0))}))
    with pytest.raises(DataError, match="market data"):
        label_frame(trajectory)
    with pytest.raises(DataError, match="market data"):
        multitask_features(trajectory)


def test_close_only_frames_get_labels_but_not_the_candle_features():
    close_only = validate(candles(CLOSE)[["asset", "timestamp", "close"]])
    labels = label_frame(close_only, horizon=2, vol_horizon=2)
    pd.testing.assert_frame_equal(labels, label_frame(candles(CLOSE), horizon=2, vol_horizon=2))
    with pytest.raises(MissingColumnError, match="multitask features needs open, high and low columns"):
        multitask_features(close_only)


def test_boundary_rows_and_bad_boundaries():
    stamps = pd.date_range("2020-01-01", periods=10, freq="D")
    assert boundary_rows(stamps, ["2020-01-03", "2020-01-07 12:00", "2019-01-01"]) == [2, 6, -1]
    with pytest.raises(ValueError, match="increase"):
        assign_splits(10, 2, [5, 3])
