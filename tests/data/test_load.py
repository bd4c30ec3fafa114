"""load(): built-in market data, user files in the usual layouts, and clear errors."""

import numpy as np
import pandas as pd
import pytest

from chaosfm.data import (
    DataError,
    EmptyDataError,
    FileFormatError,
    NonFiniteError,
    UnknownDatasetError,
    load,
)


@pytest.mark.parametrize(
    "name, rows, start",
    [("sp500", 5031, "1999-01-04"), ("nasdaq", 5031, "1999-01-04"), ("ndx", 2862, "1990-01-02"),
     ("n225", 2794, "1990-01-04"), ("jkse", 946, "1997-07-01")],
)
def test_builtin_market_data(name, rows, start):
    frame = load(name)
    assert len(frame) == rows and frame["timestamp"].iloc[0] == pd.Timestamp(start)
    assert set(frame["asset"]) == {name}
    assert frame.attrs["kind"] == "market" and frame.attrs["licence"] in ("NCSA", "MIT")
    assert (frame[["open", "high", "low", "close"]] > 0).all().all()


def test_holiday_rows_are_dropped_and_said():
    frame = load("n225")
    assert frame.attrs["repairs"] == ["dropped 160 market-holiday rows the source marks null"]


def test_several_names_make_one_frame():
    frame = load("sp500,ndx")
    assert list(frame["asset"].unique()) == ["sp500", "ndx"] and len(frame) == 5031 + 2862
    with pytest.raises(DataError, match="more than one"):
        load("sp500,sp500")


def test_csv_and_parquet_round_trip(tmp_path):
    frame = load("jkse")
    yahoo = frame.drop(columns=["asset"]).rename(columns=str.title).rename(columns={"Timestamp": "Date"})
    csv = tmp_path / "JKSE.csv"
    yahoo.to_csv(csv, index=False)
    loaded = load(csv)
    assert set(loaded["asset"]) == {"JKSE"}
    np.testing.assert_allclose(loaded["close"], frame["close"])
    parquet = tmp_path / "two.parquet"
    load("jkse,ndx").to_parquet(parquet)
    assert load(parquet)["asset"].nunique() == 2


def test_a_folder_is_a_universe_one_asset_per_file(tmp_path):
    stocks = load("sp500_stocks")
    folder = tmp_path / "universe"
    folder.mkdir()
    for ticker in ("AAPL", "KO"):
        part = stocks[stocks["asset"] == ticker][["timestamp", "close"]].rename(columns={"timestamp": "Date"})
        part.to_csv(folder / f"{ticker}.csv", index=False)
    load("jkse").to_parquet(folder / "more.parquet")  # a file with its own asset column keeps it
    (folder / "notes.md").write_text("not data")  # other files are not read
    (folder / "nested").mkdir()
    frame = load(folder)
    assert list(frame["asset"].unique()) == ["AAPL", "KO", "jkse"]
    np.testing.assert_array_equal(frame.loc[frame["asset"] == "KO", "close"],
                                  stocks.loc[stocks["asset"] == "KO", "close"])
    (folder / "KO2.parquet").write_bytes((folder / "more.parquet").read_bytes())  # jkse a second time
    with pytest.raises(DataError, match=r"\['jkse'\] appear in more than one"):
        load(folder)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileFormatError, match="empty.*no CSV or Parquet file"):
        load(empty)


def test_bad_files(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(EmptyDataError, match="empty.csv"):
        load(empty)
    header_only = tmp_path / "header.csv"
    header_only.write_text("date,open,high,low,close,volume\n")
    with pytest.raises(EmptyDataError):
        load(header_only)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet at all")
    with pytest.raises(FileFormatError, match="broken.parquet"):
        load(broken)
    other = tmp_path / "data.xlsx"
    other.write_text("x")
    with pytest.raises(FileFormatError, match="unknown file type"):
        load(other)
    with pytest.raises(UnknownDatasetError, match="sp500"):
        load("no-such-dataset")


def test_csv_error_points_at_the_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("date,open,high,low,close,volume\n2020-01-01,1,2,0.5,1.5,10\n2020-01-02,1,2,0.5,nan,10\n")
    with pytest.raises(NonFiniteError) as raised:
        load(path)
    assert "row 1 (line 3)" in str(raised.value) and "bad.csv" in str(raised.value)


def test_unknown_option_is_named():
    with pytest.raises(DataError, match="lenght"):
        load("sp500", lenght=10)


def test_datasets_lists_every_chaotic_system_from_the_registry_without_integrating(monkeypatch):
    from chaosfm.data import SYSTEMS, datasets
    from chaosfm.data import _chaos

    def integrate(*args, **kwargs):
        raise AssertionError("datasets() must not integrate anything")

    monkeypatch.setattr(_chaos, "chaotic_system", integrate)
    monkeypatch.setattr(_chaos, "largest_lyapunov_exponent", integrate)
    rows = datasets().set_index("name")
    assert set(SYSTEMS) <= set(rows.index)
    for column in ("dynamics", "dimension", "lyapunov_reference", "period"):
        assert column in rows.columns
    lorenz = rows.loc["lorenz63"]
    assert (lorenz["kind"], lorenz["dynamics"], lorenz["dimension"]) == ("trajectory", "flow", 3)
    assert lorenz["lyapunov_reference"] == 0.9056 and lorenz["period"] == SYSTEMS["lorenz63"].period
    assert rows.loc["mackey_glass", "dynamics"] == "delay" and rows.loc["lorenz96_40", "dimension"] == 40
    assert rows.loc["henon", "dynamics"] == "map" and pd.isna(rows.loc["henon", "period"])
    assert pd.isna(rows.loc["sp500", "dynamics"]) and pd.isna(rows.loc["sp500", "period"])
