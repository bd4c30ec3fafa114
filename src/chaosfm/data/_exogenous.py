"""Exogenous features: technical indicators, calendar cycles and user series aligned as-of each bar.

Everything here is causal per asset: the value at row t reads rows at or before t only, and a
user series reaches a bar only once it was published (its timestamp plus ``lag``) at or before the
bar's timestamp. Columns (per asset, row t, ``c`` the close, ``h``/``l`` the high and low):

- ``ema_{span}``               exponential moving average of ``c``, alpha = 2 / (span + 1), seeded
                               with the first close; NaN for the first ``span - 1`` rows;
- ``macd_{f}_{s}_{g}``         ema_f(c) - ema_s(c) (Appel's MACD, default 12/26/9), NaN for the
                               first ``s - 1`` rows; ``macd_signal_{f}_{s}_{g}`` its EMA of span g
                               and ``macd_hist_{f}_{s}_{g}`` line - signal, NaN for the first
                               ``s + g - 2`` rows;
- ``rsi_{n}``                  Wilder's RSI (Wilder 1978, ch. VI): gains and losses of the close
                               changes, each averaged by Wilder's smoothing (the mean of the first
                               n changes at row n, then avg = (avg * (n - 1) + x) / n);
                               100 - 100 / (1 + avg_gain / avg_loss), 100 with no loss, 50 when the
                               close did not move; NaN for the first n rows;
- ``bb_width_{n}_{k}``         Bollinger band width (upper - lower) / middle = 2 k sigma / SMA over
                               the last n closes (t included; population sigma, as Bollinger's);
                               NaN for the first n - 1 rows;
- ``atr_{n}``                  Wilder's average true range, true range
                               max(h - l, |h - c[t-1]|, |l - c[t-1]|) from row 1, smoothed as the
                               RSI's averages; NaN for the first n rows. Needs open, high and low:
                               a close-only frame asking for it is refused by name;
- ``dow_sin``, ``dow_cos``     day of week (Monday 0) on a circle of 7 days;
- ``month_sin``, ``month_cos`` month (January 0) on a circle of 12 months;
- ``hour_sin``, ``hour_cos``   time of day in hours (minutes and seconds as fractions) on a circle
                               of 24 hours, only when the data is intraday;
- one column per user series, under its own name.

The indicators are written with pandas and numpy: no technical-analysis package is among the
project's dependencies, and these few recursions are short enough to check against plain loops.
Each indicator is one entry of :data:`INDICATORS`, built in one place; callers name them.

Dimension letters: T rows of one asset.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from chaosfm.data._errors import DataError, MissingColumnError, NonNumericError, TimestampOrderError
from chaosfm.data._frame import frame_kind, require_ohlc

__all__ = [
    "CALENDAR_COLUMNS",
    "INDICATORS",
    "Indicator",
    "atr",
    "bollinger_width",
    "calendar_features",
    "ema",
    "exogenous_features",
    "indicator_columns",
    "macd",
    "rsi",
]

CALENDAR_COLUMNS = ("dow_sin", "dow_cos", "month_sin", "month_cos")
"""The calendar columns of every frame with datetime timestamps; intraday frames add the hour's."""
_HOUR_COLUMNS = ("hour_sin", "hour_cos")


# --- indicators of one asset's arrays -----------------------------------------------------------


def ema(close: np.ndarray, span: int = 20) -> np.ndarray:
    """``(T,)`` EMA of ``close`` with alpha = 2 / (span + 1), seeded with ``close[0]``; NaN for the
    first ``span - 1`` rows (too few rows for its weights to be the span's)."""
    _check_window("span", span, 1)
    out = _ewm(np.asarray(close, np.float64), 2.0 / (span + 1))
    out[: span - 1] = np.nan
    return out


def macd(close: np.ndarray, fast: int = 12, slow: int = 26, signal: int = 9) -> dict[str, np.ndarray]:
    """MACD line, signal and histogram ``(T,)`` each (keys ``line``, ``signal``, ``hist``)."""
    for name, value in (("fast", fast), ("slow", slow), ("signal", signal)):
        _check_window(name, value, 1)
    if fast >= slow:
        raise ValueError(f"macd: fast ({fast}) must be shorter than slow ({slow})")
    close = np.asarray(close, np.float64)
    line = _ewm(close, 2.0 / (fast + 1)) - _ewm(close, 2.0 / (slow + 1))
    signal_line = _ewm(line, 2.0 / (signal + 1))
    hist = line - signal_line
    line[: slow - 1] = np.nan
    signal_line[: slow + signal - 2] = np.nan
    hist[: slow + signal - 2] = np.nan
    return {"line": line, "signal": signal_line, "hist": hist}


def rsi(close: np.ndarray, period: int = 14) -> np.ndarray:
    """``(T,)`` Wilder's RSI in [0, 100] (see the module docstring); NaN for the first ``period`` rows."""
    _check_window("period", period, 1)
    change = np.diff(np.asarray(close, np.float64))
    gain = _wilder(np.maximum(change, 0.0), period)
    loss = _wilder(np.maximum(-change, 0.0), period)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = 100.0 - 100.0 / (1.0 + gain / loss)
    value = np.where(loss == 0, np.where(gain == 0, 50.0, 100.0), value)
    value = np.where(np.isnan(gain), np.nan, value)
    return np.r_[np.nan, value]  # row 0 has no change


def bollinger_width(close: np.ndarray, window: int = 20, num_std: float = 2.0) -> np.ndarray:
    """``(T,)`` (upper - lower) / middle of Bollinger bands over the last ``window`` closes."""
    _check_window("window", window, 2)
    rolling = pd.Series(np.asarray(close, np.float64)).rolling(window, min_periods=window)
    return (2.0 * num_std * rolling.std(ddof=0) / rolling.mean()).to_numpy()


def atr(high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int = 14) -> np.ndarray:
    """``(T,)`` Wilder's average true range in price units; NaN for the first ``period`` rows."""
    _check_window("period", period, 1)
    high, low, close = (np.asarray(a, np.float64) for a in (high, low, close))
    previous = close[:-1]
    true_range = np.maximum.reduce(
        [high[1:] - low[1:], np.abs(high[1:] - previous), np.abs(low[1:] - previous)]
    )
    return np.r_[np.nan, _wilder(true_range, period)]  # row 0 has no previous close


def _check_window(name: str, value: int, least: int) -> None:
    if int(value) != value or value < least:
        raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")


def _ewm(values: np.ndarray, alpha: float) -> np.ndarray:
    """y[0] = x[0], y[t] = alpha x[t] + (1 - alpha) y[t-1]: pandas' recursive form (adjust=False)."""
    return pd.Series(values).ewm(alpha=alpha, adjust=False).mean().to_numpy(copy=True)


def _wilder(values: np.ndarray, period: int) -> np.ndarray:
    """Wilder's smoothing of ``values`` ``(T,)``: NaN for the first ``period - 1``, their mean at
    ``period - 1``, then avg = (avg * (period - 1) + x) / period (an EMA with alpha 1 / period)."""
    out = np.full(len(values), np.nan)
    if len(values) < period:
        return out
    seeded = np.r_[values[:period].mean(), values[period:]]
    out[period - 1:] = _ewm(seeded, 1.0 / period)
    return out


# --- the registry -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Indicator:
    """One technical indicator: its default parameters, its column names and how to compute it.

    Attributes:
        defaults: the parameters and their standard values (``{"span": 20}``).
        columns: parameters -> the column names it writes, in order.
        compute: (one asset's rows, parameters) -> one ``(T,)`` array per column, in order.
        needs_ohlc: True when it reads high and low (refused on a close-only frame).
    """

    defaults: Mapping[str, float]
    columns: Callable[[Mapping[str, Any]], tuple[str, ...]]
    compute: Callable[[pd.DataFrame, Mapping[str, Any]], tuple[np.ndarray, ...]]
    needs_ohlc: bool = False


def _close(part: pd.DataFrame) -> np.ndarray:
    return part["close"].to_numpy(np.float64)


def _macd_columns(p: Mapping[str, Any]) -> tuple[str, ...]:
    tag = f"{p['fast']}_{p['slow']}_{p['signal']}"
    return (f"macd_{tag}", f"macd_signal_{tag}", f"macd_hist_{tag}")


def _macd_values(part: pd.DataFrame, p: Mapping[str, Any]) -> tuple[np.ndarray, ...]:
    out = macd(_close(part), p["fast"], p["slow"], p["signal"])
    return out["line"], out["signal"], out["hist"]


def _number(value: float) -> str:
    return f"{value:g}".replace(".", "p").replace("-", "m")  # a column-name-safe 2.5 -> "2p5"


INDICATORS: Mapping[str, Indicator] = MappingProxyType({
    "ema": Indicator(
        {"span": 20}, lambda p: (f"ema_{p['span']}",), lambda part, p: (ema(_close(part), p["span"]),)
    ),
    "macd": Indicator({"fast": 12, "slow": 26, "signal": 9}, _macd_columns, _macd_values),
    "rsi": Indicator(
        {"period": 14}, lambda p: (f"rsi_{p['period']}",), lambda part, p: (rsi(_close(part), p["period"]),)
    ),
    "bollinger_width": Indicator(
        {"window": 20, "num_std": 2.0},
        lambda p: (f"bb_width_{p['window']}_{_number(p['num_std'])}",),
        lambda part, p: (bollinger_width(_close(part), p["window"], p["num_std"]),),
    ),
    "atr": Indicator(
        {"period": 14},
        lambda p: (f"atr_{p['period']}",),
        lambda part, p: (atr(part["high"].to_numpy(np.float64), part["low"].to_numpy(np.float64),
                             _close(part), p["period"]),),
        needs_ohlc=True,
    ),
})
"""Indicator name -> :class:`Indicator`: every indicator :func:`exogenous_features` knows."""

IndicatorSpec = str | tuple[str, Mapping[str, Any]]
"""An indicator by name (its standard parameters) or ``(name, {parameter: value})``."""


def _resolve(spec: IndicatorSpec) -> tuple[str, Indicator, dict[str, Any]]:
    name, given = (spec, {}) if isinstance(spec, str) else (spec[0], dict(spec[1]))
    if name not in INDICATORS:
        raise ValueError(f"unknown indicator {name!r}; known: {', '.join(INDICATORS)}")
    indicator = INDICATORS[name]
    unknown = sorted(set(given) - set(indicator.defaults))
    if unknown:
        raise ValueError(f"indicator {name!r} has no parameter {', '.join(map(repr, unknown))}; "
                         f"its parameters are {', '.join(indicator.defaults)}")
    return name, indicator, {**indicator.defaults, **given}


def indicator_columns(indicators: Sequence[IndicatorSpec]) -> tuple[str, ...]:
    """The column names :func:`exogenous_features` writes for ``indicators``, in order."""
    columns: list[str] = []
    for spec in indicators:
        _, indicator, parameters = _resolve(spec)
        columns.extend(indicator.columns(parameters))
    return tuple(columns)


# --- calendar -----------------------------------------------------------------------------------


def _is_intraday(stamps: pd.Series) -> bool:
    return bool((stamps != stamps.dt.normalize()).any())


def calendar_features(stamps: pd.Series, *, intraday: bool | None = None) -> pd.DataFrame:
    """Day of week, month and (intraday) time of day of ``stamps`` as sin/cos pairs.

    Args:
        stamps: datetime timestamps ``(T,)``.
        intraday: add ``hour_sin, hour_cos``; None: when any timestamp is not at midnight.

    Returns:
        :data:`CALENDAR_COLUMNS` (and the hour's) with ``stamps``' index.

    Raises:
        DataError: the timestamps are not datetimes (a row number has no calendar).
    """
    if stamps.dtype.kind != "M":
        raise NonNumericError(
            f"calendar features need datetime timestamps, got {stamps.dtype} (pass calendar=False)",
            column="timestamp", rule="datetime timestamps",
        )
    if intraday is None:
        intraday = _is_intraday(stamps)
    angles = {
        "dow": 2 * np.pi * stamps.dt.day_of_week.to_numpy(np.float64) / 7,
        "month": 2 * np.pi * (stamps.dt.month.to_numpy(np.float64) - 1) / 12,
    }
    if intraday:
        hours = (stamps - stamps.dt.normalize()).dt.total_seconds().to_numpy(np.float64) / 3600
        angles["hour"] = 2 * np.pi * hours / 24
    columns = {}
    for name, angle in angles.items():
        columns[f"{name}_sin"], columns[f"{name}_cos"] = np.sin(angle), np.cos(angle)
    return pd.DataFrame(columns, index=stamps.index)


# --- user series aligned as-of each bar ---------------------------------------------------------


def _check_exogenous(exogenous: pd.DataFrame) -> tuple[list[str], bool]:
    """Its value columns and whether it is per asset; raise DataError naming the broken rule."""
    if "timestamp" not in exogenous.columns:
        raise MissingColumnError(f"the exogenous frame has no timestamp column; columns are "
                                 f"{list(map(str, exogenous.columns))}", source="<exogenous>")
    per_asset = "asset" in exogenous.columns
    names = [str(c) for c in exogenous.columns if c not in ("asset", "timestamp")]
    if not names:
        raise MissingColumnError("the exogenous frame has no value columns beside timestamp",
                                 source="<exogenous>")
    for name in names:
        values = exogenous[name]
        if not (pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype)):
            raise NonNumericError(f"exogenous column {name!r} is {values.dtype}, not numbers",
                                  source="<exogenous>", column=name)
    stamps = exogenous["timestamp"]
    if stamps.dtype.kind not in "Mfiu":
        raise NonNumericError(f"the exogenous timestamps are {stamps.dtype}: parse them first "
                              "(pd.to_datetime) or give numbers", source="<exogenous>", column="timestamp",
                              rule="datetime or numeric timestamps")
    groups = exogenous["asset"].astype(str).to_numpy() if per_asset else np.zeros(len(exogenous))
    for _, part in stamps.groupby(groups, sort=False):
        step = np.diff(part.to_numpy())
        bad = np.flatnonzero(step <= step.dtype.type(0))
        if bad.size:
            row = int(exogenous.index.get_loc(part.index[bad[0] + 1]))
            what = "duplicate timestamp" if step[bad[0]] == step.dtype.type(0) else "timestamp before the previous one"
            scope = f" of asset {exogenous['asset'].iloc[row]!r}" if per_asset else ""
            raise TimestampOrderError(
                f"exogenous columns {', '.join(names)}: {what}{scope} ({stamps.iloc[row]!s}); "
                "sort the exogenous frame by timestamp and keep one row per timestamp",
                source="<exogenous>", row=row, column="timestamp",
            )
    return names, per_asset


def _duration(name: str, value: Any, dated: bool) -> Any:
    """``value`` as a duration of the timestamps: a Timedelta for datetimes ("2D" or a timedelta;
    0 for none), a number for numeric ones."""
    if value is None:
        return None
    if not dated:
        if isinstance(value, (str, pd.Timedelta)):
            raise ValueError(f"{name}: the timestamps are numbers, so {name} is a number, got {value!r}")
        return float(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value != 0:
            raise ValueError(f"{name}: the timestamps are datetimes, so {name} is a duration "
                             f"(pd.Timedelta or a string such as '2D'), got the number {value!r}")
        return pd.Timedelta(0)
    return pd.Timedelta(value)


def _as_of(
    stamps: pd.Series, exogenous: pd.DataFrame, names: list[str], lag: Any, max_staleness: Any
) -> pd.DataFrame:
    """``names`` of the last exogenous row published (timestamp + lag) at or before each stamp."""
    if (stamps.dtype.kind == "M") != (exogenous["timestamp"].dtype.kind == "M"):
        raise NonNumericError(
            f"the exogenous timestamps are {exogenous['timestamp'].dtype}, the frame's {stamps.dtype}: "
            "both must be datetimes or both numbers", source="<exogenous>", column="timestamp",
            rule="comparable timestamps")
    dated = stamps.dtype.kind == "M"
    lag, max_staleness = _duration("lag", lag, dated), _duration("max_staleness", max_staleness, dated)
    published = exogenous["timestamp"] if lag is None else exogenous["timestamp"] + lag
    if dated:
        published = published.astype(stamps.dtype)
    else:
        stamps, published = stamps.astype(np.float64), published.astype(np.float64)
    right = pd.DataFrame({"published": published.to_numpy(),
                          **{n: exogenous[n].to_numpy(np.float64) for n in names}})
    left = pd.DataFrame({"stamp": stamps.to_numpy()})
    merged = pd.merge_asof(left, right, left_on="stamp", right_on="published", direction="backward")
    if max_staleness is not None:
        stale = (merged["stamp"] - merged["published"]) > max_staleness
        merged.loc[stale.to_numpy(), names] = np.nan
    return merged[names].set_axis(stamps.index)


# --- the entry point ----------------------------------------------------------------------------


def exogenous_features(
    frame: pd.DataFrame,
    *,
    indicators: Sequence[IndicatorSpec] = ("ema", "macd", "rsi", "bollinger_width"),
    calendar: bool = True,
    intraday: bool | None = None,
    exogenous: pd.DataFrame | None = None,
    lag: Any = None,
    max_staleness: Any = None,
) -> pd.DataFrame:
    """Causal exogenous features of a validated frame (see the module docstring).

    Args:
        frame: a validated market frame (indicators read ``close``; ``atr`` high and low too).
        indicators: names in :data:`INDICATORS`, or ``(name, {parameter: value})``.
        calendar: add the calendar columns (needs datetime timestamps).
        intraday: add the hour's columns; None: when any timestamp is not at midnight.
        exogenous: user series, ``timestamp, name1, ...`` (with ``asset`` for one series per
            asset), sorted with one row per timestamp (per asset).
        lag: how long after its timestamp a user value is published (a ``pd.Timedelta`` or a
            string such as ``"2D"`` for datetime timestamps, a number for numeric ones; None for
            at once); it reaches bars at or after ``timestamp + lag``.
        max_staleness: a user value older than this at a bar (bar timestamp - publication) is NaN
            there (the same units as ``lag``); None keeps the last value however old.

    Returns:
        ``asset, timestamp``, the indicator columns (:func:`indicator_columns`), the calendar
        columns and the user columns, one row per input row, same index and order.

    Raises:
        DataError: an indicator on a non-market frame, ``atr`` on a close-only frame, calendar
            features of numeric timestamps, an exogenous frame unsorted, with duplicate
            timestamps, non-numeric values, or an asset the frame has and it lacks.
    """
    source = str(frame.attrs.get("name", "<frame>"))
    resolved = [_resolve(spec) for spec in indicators]
    if resolved and frame_kind(frame) != "market":
        raise DataError("technical indicators need market data (a close column)", source=source,
                        rule="market frame")
    for name, indicator, _ in resolved:
        if indicator.needs_ohlc:
            require_ohlc(frame, f"the {name} indicator (true range from high, low and previous close)")
    names, per_asset = _check_exogenous(exogenous) if exogenous is not None else ([], False)
    columns = [c for _, indicator, p in resolved for c in indicator.columns(p)]
    clash = sorted(set(names) & {"asset", "timestamp", *columns, *CALENDAR_COLUMNS, *_HOUR_COLUMNS})
    if clash:
        raise DataError(f"exogenous columns {', '.join(clash)} clash with feature names; rename them",
                        source="<exogenous>", column=clash[0], rule="distinct column names")
    if calendar and intraday is None and frame["timestamp"].dtype.kind == "M":
        intraday = _is_intraday(frame["timestamp"])  # decided once for every asset: one column set
    parts = []
    for asset, part in frame.groupby("asset", sort=False):
        out = pd.DataFrame({"asset": part["asset"].to_numpy(), "timestamp": part["timestamp"].to_numpy()},
                           index=part.index)
        for _, indicator, p in resolved:
            for column, values in zip(indicator.columns(p), indicator.compute(part, p), strict=True):
                out[column] = values
        if calendar:
            out = out.join(calendar_features(part["timestamp"], intraday=intraday))
        if names:
            rows = exogenous
            if per_asset:
                rows = exogenous.loc[exogenous["asset"].astype(str).to_numpy() == str(asset)]
                if rows.empty:
                    raise DataError(f"the exogenous frame has no rows for asset {asset!r}",
                                    source="<exogenous>", column="asset", rule="one series per asset")
            out = out.join(_as_of(part["timestamp"], rows, names, lag, max_staleness))
        parts.append(out)
    return pd.concat(parts).loc[frame.index]
