"""``chaosfm forecast``: the timestamps of a forecast's future steps."""

import pandas as pd

from chaosfm.jobs.forecast import future_timestamps


def test_daily_bars_continue_on_business_days():
    stamps = pd.Series(pd.bdate_range("2018-12-03", "2018-12-28"))  # ends on a Friday
    got = future_timestamps(stamps, 3)
    assert got == [pd.Timestamp("2018-12-31"), pd.Timestamp("2019-01-01"), pd.Timestamp("2019-01-02")]


def test_hourly_and_numeric_time_continue_at_their_spacing():
    hourly = pd.Series(pd.date_range("2024-01-01", periods=48, freq="h"))
    assert future_timestamps(hourly, 2) == [pd.Timestamp("2024-01-03 00:00"), pd.Timestamp("2024-01-03 01:00")]
    numeric = pd.Series([0.0, 0.01, 0.02, 0.03])
    got = future_timestamps(numeric, 2)
    assert abs(got[0] - 0.04) < 1e-12 and abs(got[1] - 0.05) < 1e-12
    assert future_timestamps(pd.Series([5.0]), 2) == [None, None]


def test_monthly_bars_continue_by_calendar_month():
    monthly = pd.Series(pd.to_datetime(["2024-01-31", "2024-02-29", "2024-03-31", "2024-04-30"]))
    assert future_timestamps(monthly, 1)[0].month == 5


def test_the_table_is_parquet_for_a_parquet_file_and_csv_otherwise(tmp_path):
    from chaosfm.jobs.forecast import write_table

    table = pd.DataFrame({"asset": ["a", "a"], "step": [1, 2], "timestamp": pd.to_datetime(["2024-01-01", "2024-01-02"]),
                          "column": ["close", "close"], "mean": [1.0, 2.0], "q0.5": [1.0, 2.5]})
    write_table(table, tmp_path / "f.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "f.parquet"), table, check_dtype=False)
    write_table(table, tmp_path / "f.csv")
    assert (tmp_path / "f.csv").read_text().splitlines()[0] == "asset,step,timestamp,column,mean,q0.5"
