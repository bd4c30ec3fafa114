"""The built-in multi-asset datasets: ``indices`` (the five markets, one asset each) and
``sp500_stocks`` (20 stocks, close only), validated."""

import pandas as pd
import pytest

from chaosfm.data import DataError, assets, builtin_names, datasets, describe, has_ohlc, load, validate

MARKETS = {"sp500": 5031, "nasdaq": 5031, "ndx": 2862, "n225": 2794, "jkse": 946}


@pytest.fixture(scope="module")
def indices():
    return load("indices")


def test_indices_holds_every_market_under_its_own_name(indices):
    assert dict(indices["asset"].value_counts()) == MARKETS
    assert indices.attrs["name"] == "indices" and indices.attrs["kind"] == "market"
    for name in MARKETS:
        part = indices[indices["asset"] == name].reset_index(drop=True)
        alone = load(name)
        pd.testing.assert_frame_equal(part[alone.columns], alone, check_like=False)


def test_indices_says_which_market_each_repair_came_from(indices):
    assert indices.attrs["repairs"] == [
        "n225: dropped 160 market-holiday rows the source marks null",
        "jkse: dropped 55 market-holiday rows the source marks null",
    ]
    assert set(describe(indices)["assets"]) == set(MARKETS)


def test_indices_cannot_be_combined_with_its_own_parts():
    assert "indices" in builtin_names()
    with pytest.raises(DataError, match="more than one"):
        load("indices,sp500")


# ---- sp500_stocks: skfolio's 20 large US stocks, close only ------------------------------------

TICKERS = ["AAPL", "AMD", "BAC", "BBY", "CVX", "GE", "HD", "JNJ", "JPM", "KO", "LLY", "MRK", "MSFT", "PEP",
           "PFE", "PG", "RRC", "UNH", "WMT", "XOM"]


@pytest.fixture(scope="module")
def stocks():
    return load("sp500_stocks")


def test_sp500_stocks_is_a_close_only_frame_of_twenty_tickers(stocks):
    assert assets(stocks) == TICKERS
    assert list(stocks.columns) == ["asset", "timestamp", "close"] and not has_ohlc(stocks)
    assert stocks.attrs["kind"] == "market" and stocks.attrs["licence"] == "BSD-3-Clause"
    assert stocks.attrs["repairs"] == []  # the shipped table has a close for every ticker and date
    assert dict(stocks["asset"].value_counts()) == dict.fromkeys(TICKERS, 8313)
    span = stocks.groupby("asset")["timestamp"].agg(["min", "max"])
    assert (span["min"] == pd.Timestamp("1990-01-02")).all() and (span["max"] == pd.Timestamp("2022-12-28")).all()
    again = validate(stocks, "sp500_stocks")
    assert again["close"].equals(stocks["close"]) and again["timestamp"].equals(stocks["timestamp"])


def test_sp500_stocks_closes_are_the_values_of_the_source_file(stocks):
    # read off skfolio/datasets/data/sp500_dataset.csv.gz (its first, 1000th and last lines)
    spots = {("AAPL", "1990-01-02"): 0.264, ("KO", "1990-01-02"): 2.235, ("MSFT", "1993-12-10"): 1.593,
             ("RRC", "1993-12-10"): 4.281, ("XOM", "2022-12-28"): 106.627, ("UNH", "2022-12-28"): 524.422}
    closes = stocks.set_index(["asset", "timestamp"])["close"]
    for (ticker, day), value in spots.items():
        assert closes[(ticker, pd.Timestamp(day))] == value


def test_sp500_stocks_drops_empty_closes_and_says_how_many_per_ticker(monkeypatch):
    import skfolio.datasets

    wide = pd.DataFrame({"A": [1.0, 1.1, 1.2], "B": [float("nan"), float("nan"), 5.0]},
                        index=pd.DatetimeIndex(pd.date_range("2020-01-01", periods=3), name="Date"))
    monkeypatch.setattr(skfolio.datasets, "load_sp500_dataset", lambda: wide)
    frame = load("sp500_stocks")
    assert frame["asset"].tolist() == ["A", "A", "A", "B"] and frame["close"].tolist() == [1.0, 1.1, 1.2, 5.0]
    assert frame.attrs["repairs"] == ["dropped 2 row(s) with no close (B: 2)"]


def test_every_builtin_market_is_listed():
    listed = datasets().set_index("name")
    assert listed.loc["indices", "kind"] == "market"
    assert listed.loc["indices", "rows"] == sum(MARKETS.values())
    assert listed.loc["indices", "start"] == "1990-01-02" and listed.loc["indices", "end"] == "2018-12-31"
    assert "sp500_stocks" in builtin_names()
    assert listed.loc["sp500_stocks", "kind"] == "market" and listed.loc["sp500_stocks", "rows"] == 20 * 8313
    assert listed.loc["sp500_stocks", "start"] == "1990-01-02" and listed.loc["sp500_stocks", "end"] == "2022-12-28"
    assert listed.loc["sp500_stocks", "licence"] == "BSD-3-Clause"
