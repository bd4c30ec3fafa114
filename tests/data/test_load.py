"""load(): built-in market data, user files in the usual layouts, and clear errors."""

import numpy as np
import pandas as pd
import pytest

from chaosfm.data import (
    DataError,
    EmptyDataError,
    FileFormatError,
    MissingColumnError,
    NonFiniteError,
    NonNumericError,
    TimestampOrderError,
    UnknownDatasetError,
    describe,
    has_ohlc,
    load,
    state_columns,
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


# --- Data in the shapes people export -------------------------------------------------------------


def _daily(n=40, seed=0):
    rng = np.random.default_rng(seed)
    days = pd.date_range("2024-01-01", periods=n, freq="D")
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    return days, pd.DataFrame({"Date": days.strftime("%Y-%m-%d"), "Close": close,
                               "Volume": rng.integers(100, 1000, n).astype(float)})


def test_a_newest_first_file_is_refused_with_the_repair_it_needs_and_repaired_oldest_first(tmp_path):
    days, table = _daily()
    path = tmp_path / "export.csv"
    table.iloc[::-1].to_csv(path, index=False)
    with pytest.raises(TimestampOrderError, match=r"newest first.*--repair would sort the 40 rows oldest first") as error:
        load(path)
    assert (error.value.row, error.value.line) == (1, 3)
    frame = load(path, repair=True)
    by_hand = pd.read_csv(path).sort_values("Date").reset_index(drop=True)
    assert frame["timestamp"].tolist() == pd.to_datetime(by_hand["Date"]).tolist()
    np.testing.assert_array_equal(frame["close"].to_numpy(), by_hand["Close"].to_numpy())
    assert frame.attrs["repairs"] == ["sorted the 40 row(s) oldest first (the file was newest first)"]


def test_day_first_dates_are_refused_with_the_flag_that_reads_them(tmp_path):
    days, table = _daily()
    path = tmp_path / "eu.csv"
    table.assign(Date=days.strftime("%d/%m/%Y")).to_csv(path, index=False)
    # 13/01/2024 is the first date that cannot be month-first: it is named, with --dayfirst.
    with pytest.raises(NonNumericError, match=r"'13/01/2024' is not a month-first date.*--dayfirst") as error:
        load(path)
    assert (error.value.row, error.value.line, error.value.column) == (12, 14, "timestamp")
    frame = load(path, dayfirst=True)
    by_hand = pd.to_datetime(pd.read_csv(path)["Date"], format="%d/%m/%Y")
    assert frame["timestamp"].tolist() == by_hand.tolist() == days.tolist()


def test_dates_that_read_both_ways_but_are_in_order_only_day_first_suggest_dayfirst(tmp_path):
    # Every day and month is <= 12, so each date parses both ways; month-first the order breaks.
    wanted = pd.to_datetime(["2024-01-03", "2024-01-10", "2024-02-02", "2024-02-09", "2024-03-01", "2024-03-08"])
    path = tmp_path / "ambiguous.csv"
    pd.DataFrame({"date": wanted.strftime("%d/%m/%Y"), "close": np.arange(1.0, 7.0)}).to_csv(path, index=False)
    with pytest.raises(TimestampOrderError, match=r"read day-first \(DD/MM\) they are in order.*--dayfirst"):
        load(path)
    assert load(path, dayfirst=True)["timestamp"].tolist() == wanted.tolist()


def test_date_format_reads_any_layout_and_names_a_row_that_does_not_match(tmp_path):
    stamps = pd.date_range("2024-05-01 09:30", periods=6, freq="15min")
    path = tmp_path / "intraday.csv"
    pd.DataFrame({"time": stamps.strftime("%d.%m.%Y %H:%M"), "close": np.arange(1.0, 7.0)}).to_csv(path, index=False)
    assert load(path, date_format="%d.%m.%Y %H:%M")["timestamp"].tolist() == stamps.tolist()
    with pytest.raises(NonNumericError, match=r"row 0 \(line 2\).*does not match --date-format '%Y-%m-%d'"):
        load(path, date_format="%Y-%m-%d")


@pytest.mark.parametrize("sep", [";", "\t", "|"])
def test_the_separator_is_sniffed(tmp_path, sep):
    _, table = _daily()
    path = tmp_path / "export.csv"
    table.to_csv(path, sep=sep, index=False)
    frame = load(path)
    by_hand = pd.read_csv(path, sep=sep)
    np.testing.assert_array_equal(frame["close"].to_numpy(), by_hand["Close"].to_numpy())
    np.testing.assert_array_equal(frame["volume"].to_numpy(), by_hand["Volume"].to_numpy())


def test_a_semicolon_file_with_decimal_commas_is_read_as_numbers(tmp_path):
    _, table = _daily()
    path = tmp_path / "excel.csv"
    table.to_csv(path, sep=";", decimal=",", index=False)
    assert "," in path.read_text().splitlines()[1]  # the values are written 100,12...
    by_hand = pd.read_csv(path, sep=";", decimal=",")
    for options in ({}, {"sep": ";", "decimal": ","}):
        frame = load(path, **options)
        np.testing.assert_array_equal(frame["close"].to_numpy(), by_hand["Close"].to_numpy())
    # Told the wrong separator, the file has no timestamp column, and the error says which it saw.
    with pytest.raises(DataError, match="timestamp"):
        load(path, sep=",")


def test_offsets_across_a_dst_change_become_utc_and_the_offsets_are_kept(tmp_path):
    instants = pd.date_range("2024-03-30 22:00", periods=8, freq="h", tz="UTC")  # Paris springs forward at 01:00 UTC
    local = instants.tz_convert("Europe/Paris")
    path = tmp_path / "paris.csv"
    pd.DataFrame({"timestamp": [t.isoformat() for t in local], "close": np.arange(1.0, 9.0)}).to_csv(path, index=False)
    assert {s[-6:] for s in pd.read_csv(path)["timestamp"]} == {"+01:00", "+02:00"}
    frame = load(path)
    by_hand = pd.to_datetime(pd.read_csv(path)["timestamp"], utc=True).dt.tz_localize(None)
    assert frame["timestamp"].tolist() == by_hand.tolist() == instants.tz_localize(None).tolist()
    assert frame["timestamp"].dt.tz is None and frame.attrs["timezone"] == "+01:00, +02:00"
    assert describe(frame)["timezone"] == "+01:00, +02:00"  # what `data check` prints


def test_a_parquet_column_in_a_named_zone_becomes_utc_and_naive_stays_naive(tmp_path):
    local = pd.date_range("2024-10-26 22:00", periods=6, freq="h", tz="Europe/Paris")  # falls back on the 27th
    path = tmp_path / "zoned.parquet"
    pd.DataFrame({"timestamp": local, "close": np.arange(1.0, 7.0)}).to_parquet(path)
    frame = load(path)
    assert frame["timestamp"].tolist() == local.tz_convert("UTC").tz_localize(None).tolist()
    assert frame.attrs["timezone"] == "Europe/Paris"
    # Naive local times stay as written: across the fall-back the hour 02:00 repeats, and says so.
    naive = tmp_path / "naive.csv"
    pd.DataFrame({"timestamp": local.tz_localize(None).astype(str), "close": np.arange(1.0, 7.0)}).to_csv(naive, index=False)
    with pytest.raises(TimestampOrderError, match=r"row 5 .*duplicate timestamp \(2024-10-27 02:00:00"):
        load(naive)
    frame = load(naive, repair=True)
    assert "timezone" not in frame.attrs and frame["timestamp"].tolist() == local.tz_localize(None)[[0, 1, 2, 3, 5]].tolist()
    assert frame["close"].tolist() == [1.0, 2.0, 3.0, 4.0, 6.0]  # the last row of the repeated hour is kept


def test_offsets_mixed_with_local_times_are_refused_at_the_row(tmp_path):
    path = tmp_path / "mixed.csv"
    pd.DataFrame({"timestamp": ["2024-01-01T00:00:00+01:00", "2024-01-02T00:00:00", "2024-01-03T00:00:00+01:00"],
                  "close": [1.0, 2.0, 3.0]}).to_csv(path, index=False)
    with pytest.raises(NonNumericError, match=r"row 1 \(line 3\).*has no UTC offset"):
        load(path)


def test_a_wide_file_of_channels_is_one_trajectory_with_its_names_kept(tmp_path):
    days, _ = _daily(30)
    rng = np.random.default_rng(3)
    wide = pd.DataFrame({"time": days.strftime("%Y-%m-%d"), "temperature": rng.normal(size=30),
                         "pressure": rng.normal(size=30), "wind": rng.normal(size=30)})
    path = tmp_path / "weather.csv"
    wide.to_csv(path, index=False)
    frame = load(path)
    by_hand = pd.read_csv(path)
    assert frame.attrs["kind"] == "trajectory" and state_columns(frame) == ["x0", "x1", "x2"]
    assert frame.attrs["channels"] == {"x0": "temperature", "x1": "pressure", "x2": "wind"}
    for x, name in frame.attrs["channels"].items():
        np.testing.assert_array_equal(frame[x].to_numpy(), by_hand[name].to_numpy())
    # A text column among them is not a channel: the file stays refused, naming its columns.
    wide.assign(station="north").to_csv(path, index=False)
    with pytest.raises(MissingColumnError, match="station"):
        load(path)


def test_close_only_and_close_volume_exports_load_as_market_frames(tmp_path):
    _, table = _daily()
    for columns in (["Date", "Close"], ["Date", "Close", "Volume"]):
        path = tmp_path / f"{len(columns)}.csv"
        table[columns].to_csv(path, index=False)
        frame = load(path)
        assert frame.attrs["kind"] == "market" and not has_ohlc(frame)
        np.testing.assert_array_equal(frame["close"].to_numpy(), pd.read_csv(path)["Close"].to_numpy())
