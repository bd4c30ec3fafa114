"""Validation: each rule broken once is named with its row; malformed frames raise only DataError."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import pandas as hpd

from chaosfm.data import (
    CandleShapeError,
    DataError,
    EmptyDataError,
    MissingColumnError,
    NegativeVolumeError,
    NonFiniteError,
    NonNumericError,
    NonPositivePriceError,
    TimestampOrderError,
    has_ohlc,
    require_ohlc,
    validate,
)


def candles(n=6, asset="a"):
    close = 100 + np.arange(n, dtype=float)
    return pd.DataFrame(
        {
            "asset": asset,
            "timestamp": pd.date_range("2020-01-01", periods=n, freq="D"),
            "open": close - 0.5,
            "high": close + 1.0,
            "low": close - 1.0,
            "close": close,
            "volume": np.full(n, 1000.0),
        }
    )


def test_valid_frame_passes_and_is_canonical():
    frame = validate(candles())
    assert list(frame.columns[:7]) == ["asset", "timestamp", "open", "high", "low", "close", "volume"]
    assert frame["close"].dtype == np.float64
    assert frame.attrs["kind"] == "market"


def broken(rule):
    frame = candles()
    if rule == "nan":
        frame.loc[3, "close"] = np.nan
    elif rule == "inf":
        frame.loc[3, "volume"] = np.inf
    elif rule == "nonpositive":
        frame.loc[3, "low"] = 0.0
    elif rule == "high":
        frame.loc[3, "high"] = frame.loc[3, "close"] - 0.1
    elif rule == "low":
        frame.loc[3, "low"] = frame.loc[3, "open"] + 0.1
    elif rule == "volume":
        frame.loc[3, "volume"] = -1.0
    elif rule == "duplicate":
        frame.loc[3, "timestamp"] = frame.loc[2, "timestamp"]
    elif rule == "unsorted":
        frame.loc[3, "timestamp"] = frame.loc[0, "timestamp"] - pd.Timedelta(days=1)
    elif rule == "text":
        frame["close"] = frame["close"].astype(object)
        frame.loc[3, "close"] = "abc"
    return frame


@pytest.mark.parametrize(
    "rule, error, column",
    [
        ("nan", NonFiniteError, "close"),
        ("inf", NonFiniteError, "volume"),
        ("nonpositive", NonPositivePriceError, "low"),
        ("high", CandleShapeError, "high"),
        ("low", CandleShapeError, "low"),
        ("volume", NegativeVolumeError, "volume"),
        ("duplicate", TimestampOrderError, "timestamp"),
        ("unsorted", TimestampOrderError, "timestamp"),
        ("text", NonNumericError, "close"),
    ],
)
def test_each_rule_names_row_and_rule(rule, error, column):
    with pytest.raises(error) as raised:
        validate(broken(rule), "prices.csv", line_offset=2)
    assert raised.value.row == 3
    assert raised.value.column == column
    message = str(raised.value)
    assert "prices.csv" in message and "row 3" in message and "line 5" in message
    assert raised.value.rule in message


def test_missing_column_and_empty():
    with pytest.raises(MissingColumnError, match="volume"):
        validate(candles().drop(columns=["volume"]))
    with pytest.raises(EmptyDataError):
        validate(candles().iloc[:0])
    with pytest.raises(MissingColumnError, match="timestamp"):
        validate(candles().drop(columns=["timestamp"]))


def test_repair_fixes_and_reports():
    frame = broken("high")
    frame.loc[1, "close"] = np.nan
    repaired = validate(frame, repair=True)
    assert len(repaired) == 5
    assert (repaired["high"] >= repaired[["open", "close", "low"]].max(axis=1)).all()
    assert len(repaired.attrs["repairs"]) == 2


def test_yahoo_nixtla_chronos_layouts():
    yahoo = candles().drop(columns=["asset"]).rename(
        columns={"timestamp": "Date", "open": "Open", "high": "High", "low": "Low", "close": "Close",
                 "volume": "Volume"}
    )
    yahoo["Adj Close"] = yahoo["Close"]
    frame = validate(yahoo, default_asset="spy")
    assert set(frame["asset"]) == {"spy"} and "adj_close" in frame.columns
    nixtla = pd.DataFrame({"unique_id": ["u"] * 3, "ds": [1, 2, 3], "y": [0.1, 0.2, 0.3], "extra": 1})
    frame = validate(nixtla)
    assert list(frame["x0"]) == [0.1, 0.2, 0.3] and "extra" in frame.columns
    assert frame.attrs["kind"] == "trajectory"
    chronos = pd.DataFrame({"item_id": ["i"] * 2, "timestamp": ["2020-01-01", "2020-01-02"], "target": [1.0, 2.0]})
    assert validate(chronos)["timestamp"].dtype.kind == "M"


def test_assets_may_interleave_only_if_each_is_sorted():
    two = pd.concat([candles(asset="a"), candles(asset="b")], ignore_index=True)
    assert validate(two)["asset"].tolist() == ["a"] * 6 + ["b"] * 6
    split = pd.concat([candles(3, "a"), candles(3, "b"), candles(6, "a").iloc[3:]], ignore_index=True)
    with pytest.raises(TimestampOrderError):
        validate(split)


cells = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**20), 10**20),
    st.text(max_size=5),
    st.none(),
    st.booleans(),
    st.datetimes(),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    hpd.data_frames(
        columns=[hpd.column(name, elements=cells) for name in
                 ("timestamp", "open", "high", "low", "close", "volume")],
        index=hpd.range_indexes(max_size=6),
    ),
    st.lists(st.sampled_from(["timestamp", "open", "high", "low", "close", "volume"]), max_size=2),
)
def test_malformed_market_frames_raise_only_data_error(frame, dropped):
    frame = frame.drop(columns=list(set(dropped)))
    try:
        validate(frame, "fuzz.csv", line_offset=2)
    except DataError:
        pass


@settings(max_examples=100, deadline=None)
@given(
    hpd.data_frames(
        columns=[hpd.column("asset", elements=st.sampled_from(["a", "b", None])),
                 hpd.column("ds", elements=cells), hpd.column("y", elements=cells)],
        index=hpd.range_indexes(max_size=6),
    )
)
def test_malformed_series_frames_raise_only_data_error(frame):
    try:
        out = validate(frame)
    except DataError:
        return
    assert np.isfinite(out["x0"].to_numpy()).all()


# ---- close-only frames -------------------------------------------------------------------------


def closes(n=6, asset="a"):
    return candles(n, asset)[["asset", "timestamp", "close"]]


def test_a_close_only_frame_validates_with_or_without_volume():
    frame = validate(closes())
    assert list(frame.columns) == ["asset", "timestamp", "close"] and frame.attrs["kind"] == "market"
    assert not has_ohlc(frame) and has_ohlc(validate(candles()))
    with_volume = validate(candles()[["asset", "timestamp", "close", "volume"]])
    assert list(with_volume.columns) == ["asset", "timestamp", "close", "volume"]
    yahoo = validate(closes().drop(columns=["asset"]).rename(columns={"timestamp": "Date", "close": "Close"}),
                     default_asset="ko")
    assert yahoo["close"].tolist() == closes()["close"].tolist() and set(yahoo["asset"]) == {"ko"}


def test_some_but_not_all_of_open_high_low_is_an_error_naming_the_missing_columns():
    with pytest.raises(MissingColumnError, match="missing high, low"):
        validate(candles().drop(columns=["high", "low"]))
    with pytest.raises(MissingColumnError, match=r"missing open \["):
        validate(candles().drop(columns=["open"]))
    with pytest.raises(MissingColumnError, match="missing close"):
        validate(candles()[["asset", "timestamp", "volume"]])


@pytest.mark.parametrize(
    ("value", "error", "column"),
    [(np.nan, NonFiniteError, "close"), (-1.0, NonPositivePriceError, "close"), (0.0, NonPositivePriceError, "close"),
     ("x", NonNumericError, "close")],
)
def test_bad_closes_of_a_close_only_frame_name_their_row(value, error, column):
    frame = closes().astype({"close": object})
    frame.loc[3, "close"] = value
    with pytest.raises(error) as raised:
        validate(frame, "closes.csv", line_offset=2)
    assert raised.value.row == 3 and raised.value.column == column and "line 5" in str(raised.value)


def test_close_only_order_and_volume_rules_still_hold():
    frame = closes()
    frame.loc[3, "timestamp"] = frame.loc[2, "timestamp"]
    with pytest.raises(TimestampOrderError, match="duplicate timestamp") as raised:
        validate(frame)
    assert raised.value.row == 3
    frame = candles()[["asset", "timestamp", "close", "volume"]].copy()
    frame.loc[4, "volume"] = -1.0
    with pytest.raises(NegativeVolumeError):
        validate(frame)
    repaired = validate(closes().assign(close=[1.0, -1.0, 2.0, 3.0, np.nan, 4.0]), repair=True)
    assert repaired["close"].tolist() == [1.0, 2.0, 3.0, 4.0] and len(repaired.attrs["repairs"]) == 2


def test_require_ohlc_names_who_needs_the_candles_and_what_is_missing():
    require_ohlc(validate(candles()), "har_rv")
    with pytest.raises(MissingColumnError, match=r"har_rv needs open, high and low columns; this frame has close "
                                                 r"only \(a close-only frame: use random_walk, garch, ar"):
        require_ohlc(validate(closes()), "har_rv")
    with pytest.raises(MissingColumnError, match="har_rv needs open, high and low columns; this frame lacks high, low"):
        require_ohlc(candles().drop(columns=["high", "low"]), "har_rv")


FLOAT32_MAX = float(np.finfo(np.float32).max)  # the reference: what float32 can hold


def test_a_value_float32_cannot_hold_is_named_in_a_file_with_its_line_column_and_rule(tmp_path):
    from chaosfm.data import load

    frame = candles(8).drop(columns="asset")
    frame.loc[5, ["high", "close"]] = 1e300  # finite in float64, inf in float32
    path = tmp_path / "big.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(NonFiniteError, match=r"row 5 \(line 7\), column 'high'.*rule: representable in float32"):
        load(path)
    with np.errstate(over="ignore"):
        assert np.isinf(np.float32(1e300)) and np.isfinite(np.float32(0.99 * FLOAT32_MAX))
    frame.loc[5, ["high", "close"]] = 0.99 * FLOAT32_MAX  # the largest magnitudes float32 holds pass
    validate(frame)
    frame.loc[5, "volume"] = -2.0 * FLOAT32_MAX
    with pytest.raises(NonFiniteError, match="column 'volume'.*representable in float32"):
        validate(frame)
    repaired = validate(frame, repair=True)
    assert len(repaired) == 7 and repaired["timestamp"].tolist() == frame["timestamp"].drop(5).tolist()


def test_a_price_that_rounds_to_zero_in_float32_is_rejected_but_a_tiny_volume_is_not():
    assert np.float32(1e-50) == 0 and np.float32(1e-40) > 0  # the reference: float32 underflow
    frame = candles(6)
    frame.loc[2, ["open", "low"]] = 1e-50
    with pytest.raises(NonPositivePriceError, match=r"row 2, column 'open'.*representable in float32"):
        validate(frame)
    frame.loc[2, ["open", "low"]] = 1e-40  # subnormal in float32, but not 0
    validate(frame)
    frame = candles(6)
    frame.loc[2, "volume"] = 1e-50  # a volume may round to 0: it need not be positive
    validate(frame)


@pytest.mark.parametrize(
    "rule, hint",
    [("nan", "--repair would drop the 1 row(s) breaking this rule"),
     ("nonpositive", "--repair would drop the 1 row(s) breaking this rule"),
     ("high", "--repair would widen high/low of the 1 candle(s) to contain open/close")],
)
def test_a_repairable_rule_ends_with_what_repair_would_do(rule, hint):
    with pytest.raises(DataError) as error:
        validate(broken(rule))
    assert error.value.detail.endswith(f"({hint})")


def test_timestamp_errors_say_what_repair_would_do_and_repair_says_what_it_did(capsys, monkeypatch):
    monkeypatch.delenv("CHAOSFM_QUIET", raising=False)
    frame = candles(8)
    shuffled = frame.iloc[[0, 1, 3, 2, 4, 5, 6, 7]].reset_index(drop=True)
    with pytest.raises(TimestampOrderError, match=r"row 3.*\(--repair would sort the rows by timestamp\)"):
        validate(shuffled)
    duplicated = pd.concat([frame.iloc[:5], frame.iloc[[4]].assign(close=110.0, high=111.0), frame.iloc[5:]],
                           ignore_index=True)
    with pytest.raises(TimestampOrderError,
                       match=r"row 5.*duplicate timestamp.*keep the last row of each duplicate timestamp \(1 row"):
        validate(duplicated)
    repaired = validate(duplicated, repair=True)
    # Keep-last: the second row of the repeated timestamp survives, every other row as it was.
    assert repaired["close"].tolist() == [*frame["close"].iloc[:4], 110.0, *frame["close"].iloc[5:]]
    assert repaired.attrs["repairs"] == ["dropped 1 duplicate timestamp row(s), keeping the last of each"]
    assert "repair: dropped 1 duplicate timestamp row(s), keeping the last of each" in capsys.readouterr().err
    both = validate(pd.concat([shuffled, shuffled.iloc[[0]]], ignore_index=True), repair=True)
    assert both["timestamp"].tolist() == frame["timestamp"].tolist()
    assert both.attrs["repairs"] == ["sorted the rows by timestamp (2 of 9 row(s) were out of order)",
                                     "dropped 1 duplicate timestamp row(s), keeping the last of each"]
