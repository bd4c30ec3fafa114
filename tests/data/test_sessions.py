"""The session clock: market time between bars, against hand-worked calendars and a minute-by-minute count."""

import numpy as np
import pandas as pd
import pytest

from chaosfm.data import in_session, open_seconds, parse_session, session_clock, session_unit


def test_daily_bars_read_one_per_trading_day_and_zero_on_a_saturday():
    # Thu 4, Fri 5, Sat 6 (a closure row), Mon 8, Wed 10 (Tuesday missing), Thu 11 January 2024.
    stamps = pd.Series(pd.to_datetime(["2024-01-04", "2024-01-05", "2024-01-06", "2024-01-08", "2024-01-10",
                                       "2024-01-11"]))
    assert session_unit(stamps, "weekdays") == 86_400.0
    np.testing.assert_array_equal(session_clock(stamps, "weekdays", 86_400.0), [1, 1, 0, 1, 2, 1])
    # On a 24/7 clock the weekend is time like any other: Sat -> Mon is two days.
    np.testing.assert_array_equal(session_clock(stamps, "24/7", 86_400.0), [1, 1, 1, 2, 2, 1])
    np.testing.assert_array_equal(in_session(stamps, "weekdays"), [True, True, False, True, True, True])


def test_hourly_bars_count_only_the_session_hours():
    # A US session in UTC, 14:30-21:00: a pre-open bar is a closure; Friday 20:00 -> Monday 14:30 is
    # the hour from 20:00 to Friday's close.
    stamps = pd.Series(pd.to_datetime(["2024-01-05 14:00", "2024-01-05 15:00", "2024-01-05 20:00",
                                       "2024-01-08 14:30", "2024-01-08 15:30"]))
    np.testing.assert_array_equal(session_clock(stamps, "weekdays 14:30-21:00", 3600.0), [0, 1, 5, 1, 1])


@pytest.mark.parametrize("session", ["24/7", "weekdays", "weekdays 08:00-16:30"])
def test_open_seconds_match_a_minute_by_minute_count(session):
    rng = np.random.default_rng(0)
    start = np.datetime64("2023-12-27T00:00")  # a Wednesday; three weeks of minutes from there
    minutes = np.sort(rng.choice(21 * 24 * 60, size=40, replace=False))
    stamps = start + minutes.astype("timedelta64[m]")
    weekdays, open_at, close_at = parse_session(session)

    def is_open(minute: np.datetime64) -> bool:
        day = minute.astype("datetime64[D]")
        second = (minute - day).astype("timedelta64[s]").astype(int)
        weekday = (day - np.datetime64("1970-01-05")).astype(int) % 7
        return (not weekdays or weekday < 5) and open_at <= second < close_at

    expected = [60 * sum(is_open(m) for m in np.arange(a, b, dtype="datetime64[m]"))
                for a, b in zip(stamps[:-1], stamps[1:])]
    np.testing.assert_allclose(np.diff(open_seconds(stamps, session)), expected)


def test_bad_sessions_and_stamps_say_what_is_wrong():
    with pytest.raises(ValueError, match="'weekends' is not one of"):
        parse_session("weekends")
    with pytest.raises(ValueError, match="closes at or before it opens"):
        parse_session("weekdays 16:00-09:30")
    with pytest.raises(ValueError, match="not HH:MM"):
        parse_session("weekdays 09:30-25:00")
    stamps = pd.Series(pd.to_datetime(["2024-01-04", "2024-01-03"]))
    with pytest.raises(ValueError, match="row 1 is before"):
        session_clock(stamps, "weekdays", 86_400.0)
    with pytest.raises(ValueError, match="must be positive"):
        session_clock(stamps[:1], "weekdays", 0.0)
    with pytest.raises(ValueError, match="no two timestamps"):
        session_unit(pd.Series(pd.to_datetime(["2024-01-06", "2024-01-07"])), "weekdays")
