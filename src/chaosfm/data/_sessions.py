"""Market time between bars: the clock of a session-gated sequence model.

A sequence model whose step size follows the calendar lets its state decay across a weekend as
across three trading days. :func:`session_clock` instead counts only the time the market was open
between a bar and the open bar before it, in bar units, so

* a bar on the next trading day after a weekend reads 1, as any other bar;
* a bar after a missing one (a data gap, or a weekday holiday: no exchange calendar is assumed)
  reads 2;
* a row inside a closure (a Saturday row, a row outside the session's hours, say from a panel
  aligned on another market's calendar) reads 0, and a model multiplying its step size by the
  clock passes such a row without decay or input (:class:`chaosfm.models.Mamba2Mixer`).

A session is one of :data:`SESSIONS`' forms, timestamps naive UTC as a validated frame has them:

* ``"24/7"``: always open (crypto); the clock is plain elapsed time;
* ``"weekdays"``: closed on Saturday and Sunday (UTC);
* ``"weekdays HH:MM-HH:MM"``: open on weekdays between the two UTC times only.

A row is inside a closure when its timestamp is: on a Saturday or Sunday (the weekday forms), or
outside the session's hours, both ends included (a bar stamped at the open or at the close is in
the session). A daily bar is stamped with its date (00:00), so a Saturday row is a closure and
Monday's bar reads the Friday it follows.

The unit (seconds of market time per bar) is fixed from training rows
(:func:`session_unit`, the median positive gap) and saved with the model, so later rows are read
on the same clock and no later row changes it.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

__all__ = ["SESSIONS", "in_session", "open_seconds", "parse_session", "session_clock", "session_unit"]

SESSIONS = ("24/7", "weekdays", "weekdays HH:MM-HH:MM")
"""The session forms :func:`parse_session` reads."""

_DAY = 86_400
_HOURS = re.compile(r"^weekdays (\d{2}):(\d{2})-(\d{2}):(\d{2})$")
_MONDAY = np.datetime64("1970-01-05", "D")  # weekday arithmetic counts whole weeks from a Monday


def parse_session(session: str) -> tuple[bool, int, int]:
    """``(weekdays_only, open_second, close_second)`` of a session string (see the module docstring).

    Raises:
        ValueError: naming the string and the forms allowed, or the hours' rule it broke.
    """
    if session == "24/7":
        return False, 0, _DAY
    if session == "weekdays":
        return True, 0, _DAY
    match = _HOURS.match(session)
    if match is None:
        raise ValueError(f"session: {session!r} is not one of {', '.join(repr(s) for s in SESSIONS)}")
    h0, m0, h1, m1 = (int(g) for g in match.groups())
    if h0 > 23 or h1 > 24 or m0 > 59 or m1 > 59 or (h1 == 24 and m1):
        raise ValueError(f"session: {session!r} has a time that is not HH:MM of a day (00:00 to 24:00)")
    start, end = h0 * 3600 + m0 * 60, h1 * 3600 + m1 * 60
    if end <= start:
        raise ValueError(f"session: {session!r} closes at or before it opens (a session within one UTC day)")
    return True, start, end


def _day_parts(stamps: pd.Series | pd.DatetimeIndex | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each timestamp's day (``datetime64[D]``) and seconds into that day."""
    times = np.asarray(pd.to_datetime(np.asarray(stamps)), dtype="datetime64[ns]")
    days = times.astype("datetime64[D]")
    return days, (times - days.astype("datetime64[ns]")).astype(np.int64) / 1e9


def open_seconds(stamps: pd.Series | pd.DatetimeIndex | np.ndarray, session: str) -> np.ndarray:
    """Seconds of market time from a fixed origin (a Monday, 1970-01-05) to each timestamp: a
    non-decreasing function whose differences are the open time between two timestamps."""
    weekdays, start, end = parse_session(session)
    days, into_day = _day_parts(stamps)
    length = end - start
    within = np.clip(into_day - start, 0.0, length)
    if not weekdays:
        whole = (days - _MONDAY).astype(np.int64)
        return whole * float(length) + within
    # Weekdays before each day (Monday-origin weeks: five per week plus the days of this week up to
    # Friday), and nothing of the day itself when it is a Saturday or Sunday.
    offset = (days - _MONDAY).astype(np.int64)
    weeks, weekday = np.divmod(offset, 7)
    before = weeks * 5 + np.minimum(weekday, 5)
    return before * float(length) + np.where(weekday < 5, within, 0.0)


def in_session(stamps: pd.Series | pd.DatetimeIndex | np.ndarray, session: str) -> np.ndarray:
    """Per timestamp, whether it lies in the session (see the module docstring): a bool array."""
    weekdays, start, end = parse_session(session)
    days, into_day = _day_parts(stamps)
    inside = (into_day >= start) & (into_day <= end)
    if weekdays:
        inside &= (days - _MONDAY).astype(np.int64) % 7 < 5
    return inside


def _open_gaps(stamps: pd.Series | np.ndarray, session: str) -> tuple[np.ndarray, np.ndarray]:
    """The rows in session and, for each after the first, the market seconds since the one before it."""
    seconds = open_seconds(stamps, session)
    rows = np.flatnonzero(in_session(stamps, session))
    return rows, np.diff(seconds[rows])


def session_unit(stamps: pd.Series | np.ndarray, session: str) -> float:
    """Seconds of market time per bar: the median positive gap between consecutive rows in session.

    Raises:
        ValueError: fewer than two rows in session that are apart in market time.
    """
    _, gaps = _open_gaps(stamps, session)
    gaps = gaps[gaps > 0]
    if gaps.size == 0:
        raise ValueError(f"session {session!r}: no two timestamps are apart in market time; no bar unit to measure")
    return float(np.median(gaps))


def session_clock(stamps: pd.Series | np.ndarray, session: str, unit: float) -> np.ndarray:
    """Per row, the market time since the row in session before it, in bar units (float32): 0 for a
    row inside a closure, 1 for the first row in session.

    Args:
        stamps: one asset's timestamps, ascending.
        session: see the module docstring.
        unit: seconds of market time per bar (:func:`session_unit` of the training rows).

    Raises:
        ValueError: an unknown session, a unit that is not positive, or timestamps out of order.
    """
    if not unit > 0:
        raise ValueError(f"session clock: unit {unit!r} must be positive (seconds of market time per bar)")
    times = np.asarray(pd.to_datetime(np.asarray(stamps)), dtype="datetime64[ns]")
    if np.any(times[1:] < times[:-1]):
        row = int(np.flatnonzero(times[1:] < times[:-1])[0]) + 1
        raise ValueError(f"session clock: timestamp at row {row} is before the one above it (rows must be ascending)")
    rows, gaps = _open_gaps(times, session)
    clock = np.zeros(len(times), np.float64)
    if rows.size:
        clock[rows] = np.concatenate([[unit], gaps]) / unit
    return clock.astype(np.float32)
