"""Exogenous features: indicators against hand-worked values and plain-loop references, causality
as a property, as-of alignment of user series, and the phase of the calendar cycles."""

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chaosfm.data import (
    CALENDAR_COLUMNS,
    DataError,
    MissingColumnError,
    TimestampOrderError,
    atr,
    bollinger_width,
    calendar_features,
    ema,
    exogenous_features,
    indicator_columns,
    macd,
    rsi,
    validate,
)

ALL = ("ema", "macd", "rsi", "bollinger_width", "atr")


# --- slow references: plain Python loops over lists ---------------------------------------------


def ema_loop(x, span):
    alpha = 2 / (span + 1)
    out, y = [], None
    for value in x:
        y = value if y is None else alpha * value + (1 - alpha) * y
        out.append(y)
    return out


def wilder_loop(x, n):
    """Wilder's smoothing: the mean of the first n values, then (avg * (n - 1) + x) / n."""
    out = [math.nan] * len(x)
    if len(x) < n:
        return out
    avg = sum(x[:n]) / n
    out[n - 1] = avg
    for i in range(n, len(x)):
        avg = (avg * (n - 1) + x[i]) / n
        out[i] = avg
    return out


def rsi_loop(close, n):
    gains = [max(close[i] - close[i - 1], 0.0) for i in range(1, len(close))]
    losses = [max(close[i - 1] - close[i], 0.0) for i in range(1, len(close))]
    out = [math.nan]
    for g, lo in zip(wilder_loop(gains, n), wilder_loop(losses, n)):
        if math.isnan(g):
            out.append(math.nan)
        elif lo == 0:
            out.append(50.0 if g == 0 else 100.0)
        else:
            out.append(100 - 100 / (1 + g / lo))
    return out


def atr_loop(high, low, close, n):
    tr = [max(high[i] - low[i], abs(high[i] - close[i - 1]), abs(low[i] - close[i - 1]))
          for i in range(1, len(close))]
    return [math.nan] + wilder_loop(tr, n)


def bollinger_loop(close, window, k):
    out = []
    for t in range(len(close)):
        if t < window - 1:
            out.append(math.nan)
            continue
        last = close[t - window + 1: t + 1]
        mean = sum(last) / window
        sigma = math.sqrt(sum((v - mean) ** 2 for v in last) / window)
        out.append(2 * k * sigma / mean)
    return out


def random_candles(n, seed, start="2024-01-01", freq="D"):
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    open_ = close * np.exp(rng.normal(0, 0.01, n))
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.02, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.02, n))
    return validate(pd.DataFrame({
        "timestamp": pd.date_range(start, periods=n, freq=freq), "open": open_, "high": high,
        "low": low, "close": close, "volume": rng.uniform(1, 2, n),
    }))


# --- indicators: worked by hand ------------------------------------------------------------------


def test_ema_by_hand():
    # span 3: alpha 1/2; 1, 1.5, 2.25, 3.125, the first two masked as warm-up
    np.testing.assert_allclose(ema(np.array([1.0, 2, 3, 4]), 3), [np.nan, np.nan, 2.25, 3.125])


def test_rsi_by_hand():
    # changes +1, -0.5, +1.5, -1, +0.5; period 3: avg gain 2.5/3, loss 0.5/3 -> RS 5 -> 83.33;
    # then gain 5/9, loss 4/9 -> 55.56; then gain 29/54, loss 16/54 -> 64.44
    out = rsi(np.array([10.0, 11, 10.5, 12, 11, 11.5]), 3)
    np.testing.assert_allclose(out[3:], [100 - 100 / 6, 100 - 100 / 2.25, 100 - 100 / (1 + 29 / 16)])
    assert np.isnan(out[:3]).all()
    assert rsi(np.arange(1.0, 20), 14)[-1] == 100.0  # no loss at all
    assert rsi(np.full(20, 5.0), 14)[-1] == 50.0  # no move at all


def test_atr_by_hand():
    # true ranges from row 1: max(1, 1.5, 0.5) = 1.5, max(1, 2.5, 1.5) = 2.5, max(2, 1, 3) = 3;
    # period 2: (1.5 + 2.5) / 2 = 2, then (2 * 1 + 3) / 2 = 2.5
    close = np.array([10.0, 11, 13, 11])
    high = np.array([10.5, 11.5, 13.5, 12])
    low = np.array([9.5, 10.5, 12.5, 10])
    np.testing.assert_allclose(atr(high, low, close, 2), [np.nan, np.nan, 2.0, 2.5])


def test_bollinger_width_by_hand():
    # window 3 on 1, 2, 3: mean 2, population sigma sqrt(2/3), width 4 sigma / mean
    out = bollinger_width(np.array([1.0, 2, 3]), 3, 2.0)
    np.testing.assert_allclose(out, [np.nan, np.nan, 2 * math.sqrt(2 / 3)])


def test_macd_by_hand():
    # fast 1 (the close itself), slow 3 (alpha 1/2), signal 1 (the line itself) on 0, 4, 8:
    # ema_3 = 0, 2, 5 -> line 0, 2, 3 (first 2 rows warm-up), histogram 0
    out = macd(np.array([0.0, 4, 8]), 1, 3, 1)
    np.testing.assert_allclose(out["line"], [np.nan, np.nan, 3.0])
    np.testing.assert_allclose(out["signal"], [np.nan, np.nan, 3.0])
    np.testing.assert_allclose(out["hist"], [np.nan, np.nan, 0.0])


# --- indicators: against the slow references on a longer series ---------------------------------


def test_indicators_agree_with_plain_loops():
    frame = random_candles(80, seed=1)
    close, high, low = (frame[k].tolist() for k in ("close", "high", "low"))
    out = exogenous_features(frame, indicators=ALL, calendar=False)
    expected_ema = ema_loop(close, 20)
    np.testing.assert_allclose(out["ema_20"].to_numpy()[19:], expected_ema[19:], rtol=1e-12)
    assert out["ema_20"].iloc[:19].isna().all()
    line = [a - b for a, b in zip(ema_loop(close, 12), ema_loop(close, 26))]
    signal = ema_loop(line, 9)
    np.testing.assert_allclose(out["macd_12_26_9"].to_numpy()[25:], line[25:], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out["macd_signal_12_26_9"].to_numpy()[33:], signal[33:], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out["macd_hist_12_26_9"].to_numpy()[33:],
                               [a - b for a, b in zip(line, signal)][33:], rtol=1e-9, atol=1e-12)
    assert out["macd_12_26_9"].iloc[:25].isna().all() and out["macd_hist_12_26_9"].iloc[:33].isna().all()
    np.testing.assert_allclose(out["rsi_14"], rsi_loop(close, 14), rtol=1e-10)
    np.testing.assert_allclose(out["atr_14"], atr_loop(high, low, close, 14), rtol=1e-10)
    np.testing.assert_allclose(out["bb_width_20_2"], bollinger_loop(close, 20, 2.0), rtol=1e-9)
    assert list(out.columns[2:]) == list(indicator_columns(ALL))


def test_parameters_name_their_columns_and_assets_do_not_mix():
    a, b = random_candles(50, seed=2), random_candles(50, seed=3)
    b["asset"] = "other"
    both = validate(pd.concat([a, b], ignore_index=True))
    specs = [("ema", {"span": 5}), ("bollinger_width", {"window": 10, "num_std": 2.5}), ("rsi", {"period": 7})]
    out = exogenous_features(both, indicators=specs, calendar=False)
    assert list(out.columns) == ["asset", "timestamp", "ema_5", "bb_width_10_2p5", "rsi_7"]
    alone = exogenous_features(b, indicators=specs, calendar=False)
    np.testing.assert_array_equal(out.loc[out["asset"] == "other"].iloc[:, 2:].to_numpy(),
                                  alone.iloc[:, 2:].to_numpy())
    with pytest.raises(ValueError, match="unknown indicator 'adx'"):
        exogenous_features(a, indicators=["adx"])
    with pytest.raises(ValueError, match="no parameter 'window'"):
        exogenous_features(a, indicators=[("ema", {"window": 3})])


def test_atr_on_a_close_only_frame_is_refused_by_name():
    close_only = validate(random_candles(30, seed=4)[["asset", "timestamp", "close"]])
    out = exogenous_features(close_only, indicators=("ema", "rsi"))
    assert out["rsi_14"].notna().sum() == 30 - 14
    with pytest.raises(MissingColumnError, match="atr indicator.*close only"):
        exogenous_features(close_only, indicators=("rsi", "atr"))


# --- causality ------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    st.integers(40, 70).flatmap(lambda n: st.tuples(
        st.just(n), st.integers(1, n - 2), st.integers(0, 2**31 - 1), st.integers(0, 3),
    ))
)
def test_changing_rows_after_t_never_changes_features_at_or_before_t(args):
    n, t, seed, lag_days = args
    frame = random_candles(n, seed)
    rng = np.random.default_rng(seed + 1)
    macro = pd.DataFrame({"timestamp": pd.date_range("2023-12-20", periods=n // 2 + 10, freq="2D")})
    macro["cpi"] = rng.normal(size=len(macro))
    kwargs = dict(indicators=ALL, exogenous=macro, lag=pd.Timedelta(days=lag_days),
                  max_staleness=pd.Timedelta(days=5))
    original = exogenous_features(frame, **kwargs)

    changed_frame = frame.copy()
    tail = n - t - 1
    scale = np.exp(np.cumsum(rng.normal(0, 0.05, tail)))
    for column in ("open", "high", "low", "close"):
        changed_frame.loc[t + 1:, column] = frame[column].iloc[t + 1:].to_numpy() * scale
    changed_frame.loc[t + 1:, "high"] *= 1 + rng.uniform(0, 0.05, tail)
    changed_macro = macro.copy()
    bar = frame["timestamp"].iloc[t]
    unpublished = (macro["timestamp"] + pd.Timedelta(days=lag_days) > bar).to_numpy()
    changed_macro.loc[unpublished, "cpi"] = rng.normal(10, 1, int(unpublished.sum()))
    changed = exogenous_features(changed_frame, **{**kwargs, "exogenous": changed_macro})

    columns = [c for c in original.columns if c not in ("asset", "timestamp")]
    before = original[columns].to_numpy()[: t + 1]
    np.testing.assert_array_equal(before, changed[columns].to_numpy()[: t + 1])
    later = original[columns].to_numpy()[t + 1:]
    assert not np.allclose(later, changed[columns].to_numpy()[t + 1:], equal_nan=True)  # the change is seen


# --- user series as-of each bar ---------------------------------------------------------------------


def bars(stamps):
    stamps = pd.to_datetime(stamps)
    return validate(pd.DataFrame({"timestamp": stamps, "close": np.arange(1.0, len(stamps) + 1)}))


def test_a_value_stamped_after_a_bar_never_reaches_it():
    frame = bars(["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"])
    macro = pd.DataFrame({"timestamp": pd.to_datetime(["2023-12-31 00:00:00", "2024-01-02 00:00:01", "2024-01-04 00:00:00"]),
                          "rate": [1.0, 2.0, 3.0]})
    out = exogenous_features(frame, indicators=(), calendar=False, exogenous=macro)
    # the 01-02 bar is one second before the second value: it still sees the first; 01-04 sees
    # the value stamped exactly at it
    np.testing.assert_array_equal(out["rate"], [1.0, 1.0, 2.0, 3.0])
    early = exogenous_features(bars(["2023-12-30", "2024-01-01"]), indicators=(), calendar=False, exogenous=macro)
    np.testing.assert_array_equal(early["rate"], [np.nan, 1.0])  # nothing published yet


def test_lag_and_max_staleness_by_hand():
    frame = bars(pd.date_range("2024-01-01", periods=8, freq="D"))
    macro = pd.DataFrame({"timestamp": pd.to_datetime(["2024-01-01", "2024-01-03"]), "cpi": [10.0, 20.0]})
    out = exogenous_features(frame, indicators=(), calendar=False, exogenous=macro,
                             lag=pd.Timedelta(days=2), max_staleness=pd.Timedelta(days=3))
    # published on 01-03 and 01-05; stale after 3 days: 01-09 would be, the last bar 01-08 is not
    np.testing.assert_array_equal(out["cpi"], [np.nan, np.nan, 10.0, 10.0, 20.0, 20.0, 20.0, 20.0])
    short = exogenous_features(frame, indicators=(), calendar=False, exogenous=macro,
                               lag=pd.Timedelta(days=2), max_staleness=pd.Timedelta(days=1))
    np.testing.assert_array_equal(short["cpi"], [np.nan, np.nan, 10.0, 10.0, 20.0, 20.0, np.nan, np.nan])
    written = exogenous_features(frame, indicators=(), calendar=False, exogenous=macro, lag="2D", max_staleness="1D")
    np.testing.assert_array_equal(written["cpi"], short["cpi"])
    with pytest.raises(ValueError, match="lag: the timestamps are datetimes"):
        exogenous_features(frame, indicators=(), calendar=False, exogenous=macro, lag=2)


def test_per_asset_series_and_numeric_timestamps():
    frame = validate(pd.DataFrame({"asset": ["a"] * 3 + ["b"] * 3, "timestamp": [0, 1, 2] * 2,
                                   "close": [1.0, 2, 3, 4, 5, 6]}))
    flows = pd.DataFrame({"asset": ["a", "a", "b"], "timestamp": [0.0, 1.5, 0.5], "flow": [1.0, 2.0, 7.0]})
    out = exogenous_features(frame, indicators=(), calendar=False, exogenous=flows, lag=0.5)
    np.testing.assert_array_equal(out["flow"], [np.nan, 1.0, 2.0, np.nan, 7.0, 7.0])
    with pytest.raises(DataError, match="no rows for asset 'b'"):
        exogenous_features(frame, indicators=(), calendar=False, exogenous=flows.iloc[:2])


def test_an_unsorted_or_duplicated_exogenous_frame_is_refused_naming_it():
    frame = bars(["2024-01-01", "2024-01-02"])
    unsorted = pd.DataFrame({"timestamp": pd.to_datetime(["2024-01-02", "2024-01-01"]), "vix": [1.0, 2.0]})
    with pytest.raises(TimestampOrderError, match=r"row 1, column 'timestamp'.*vix.*before the previous") as error:
        exogenous_features(frame, indicators=(), calendar=False, exogenous=unsorted)
    assert error.value.column == "timestamp" and error.value.row == 1
    duplicated = pd.DataFrame({"timestamp": pd.to_datetime(["2024-01-01", "2024-01-01"]), "vix": [1.0, 2.0]})
    with pytest.raises(TimestampOrderError, match="vix: duplicate timestamp"):
        exogenous_features(frame, indicators=(), calendar=False, exogenous=duplicated)
    words = pd.DataFrame({"timestamp": pd.to_datetime(["2024-01-01"]), "vix": ["high"]})
    with pytest.raises(DataError, match="column 'vix'.*not numbers"):
        exogenous_features(frame, indicators=(), calendar=False, exogenous=words)
    text = pd.DataFrame({"timestamp": ["2024-01-01"], "vix": [1.0]})
    with pytest.raises(DataError, match="column 'timestamp'.*parse them first"):
        exogenous_features(frame, indicators=(), calendar=False, exogenous=text)


# --- calendar ---------------------------------------------------------------------------------------


def test_calendar_phase_on_known_dates():
    # 2024-01-01 is a Monday (phase 0), 2024-07-04 a Thursday in July (month phase pi)
    stamps = pd.Series(pd.to_datetime(["2024-01-01 00:00", "2024-07-04 06:00"]))
    out = calendar_features(stamps)
    np.testing.assert_allclose(out.iloc[0][["dow_sin", "dow_cos", "month_sin", "month_cos"]], [0, 1, 0, 1], atol=1e-12)
    np.testing.assert_allclose(out.iloc[1][["dow_sin", "dow_cos"]],
                               [math.sin(2 * math.pi * 3 / 7), math.cos(2 * math.pi * 3 / 7)])
    np.testing.assert_allclose(out.iloc[1][["month_sin", "month_cos"]], [0, -1], atol=1e-12)
    np.testing.assert_allclose(out.iloc[1][["hour_sin", "hour_cos"]], [1, 0], atol=1e-12)  # 6 h: a quarter turn
    np.testing.assert_allclose(out.iloc[0][["hour_sin", "hour_cos"]], [0, 1], atol=1e-12)


def test_calendar_pairs_lie_on_the_unit_circle_and_hours_only_intraday():
    hourly = random_candles(200, seed=5, start="2024-03-01 09:30", freq="37min")
    out = exogenous_features(hourly, indicators=())
    assert list(out.columns[2:]) == [*CALENDAR_COLUMNS, "hour_sin", "hour_cos"]
    for name in ("dow", "month", "hour"):
        np.testing.assert_allclose(out[f"{name}_sin"] ** 2 + out[f"{name}_cos"] ** 2, 1.0)
    daily = exogenous_features(random_candles(10, seed=6), indicators=())
    assert list(daily.columns[2:]) == list(CALENDAR_COLUMNS)
    numeric = validate(pd.DataFrame({"timestamp": [0, 1], "close": [1.0, 2.0]}))
    with pytest.raises(DataError, match="calendar features need datetime timestamps"):
        exogenous_features(numeric, indicators=())


# --- the encoder's "close+indicators" feature set -----------------------------------------------


def test_the_close_plus_indicators_set_reads_the_same_indicators():
    from chaosfm.train import FeatureScaler, feature_set, feature_streams

    candles = random_candles(60, seed=7)
    closes = validate(candles[["asset", "timestamp", "close"]])
    features = feature_set(closes, "close+indicators")
    assert features[-2:] == ("rsi_14", "bb_width_20_2")
    for frame in (candles, closes):  # indicators read closes: either kind of frame gives the set
        values, stamps = feature_streams(frame, features=features)["series"]
        assert values.shape == (60 - 20, len(features))  # log_return_20 is the longest warm-up
        rows = stamps.map(dict(zip(frame["timestamp"], range(60)))).to_numpy()
        np.testing.assert_allclose(values[:, -2], np.array(rsi_loop(frame["close"].tolist(), 14))[rows], rtol=1e-10)
        np.testing.assert_allclose(values[:, -1], np.array(bollinger_loop(frame["close"].tolist(), 20, 2.0))[rows],
                                   rtol=1e-9)
    assert FeatureScaler.fit({"series": values}, features).features == features
    with pytest.raises(ValueError, match=r"unknown feature set 'close\+macd'"):
        feature_set(closes, "close+macd")
