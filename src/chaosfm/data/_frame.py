"""Canonical frames: column names, kinds and validation.

A market frame is long format ``asset, timestamp, open, high, low, close, volume``, or a
close-only frame ``asset, timestamp, close`` (``volume`` optional) for data that has no candles;
a trajectory frame is ``asset, timestamp, x0..xk``. Extra columns are kept. Whatever needs the
candle's open, high and low asks :func:`require_ohlc`, which names what is missing. :func:`validate` rejects a frame
that breaks a rule with a :class:`DataError` subclass naming the source, the row and the rule;
``repair=True`` fixes what it can instead and says what it did.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from chaosfm._progress import say
from chaosfm.data._errors import (
    CandleShapeError,
    DataError,
    EmptyDataError,
    MissingColumnError,
    NegativeVolumeError,
    NonFiniteError,
    NonNumericError,
    NonPositivePriceError,
    TimestampOrderError,
)

PRICE_COLUMNS = ("open", "high", "low", "close")
MARKET_COLUMNS = (*PRICE_COLUMNS, "volume")
OHLC_COLUMNS = ("open", "high", "low")
"""The candle columns a close-only frame lacks."""
_CLOSE_ONLY_MODELS = "random_walk, garch, ar, last_value, seasonal_naive or context_parroting"
_STATE_COLUMN = re.compile(r"^x(\d+)$")
FLOAT32_RULE = "representable in float32"
"""Models compute in float32: a value finite in float64 may overflow there (or a price round to 0)."""
_FLOAT32_MAX = float(np.finfo(np.float32).max)

# Usual layouts, matched case-insensitively. Yahoo's "Adj Close" becomes the extra column
# "adj_close"; the univariate layouts of Nixtla (unique_id, ds, y) and Chronos (item_id,
# timestamp, target) become a one-channel trajectory frame (asset, timestamp, x0).
_ALIASES = {
    "asset": "asset",
    "symbol": "asset",
    "ticker": "asset",
    "unique_id": "asset",
    "item_id": "asset",
    "timestamp": "timestamp",
    "date": "timestamp",
    "datetime": "timestamp",
    "time": "timestamp",
    "ds": "timestamp",
    "open": "open",
    "high": "high",
    "low": "low",
    "close": "close",
    "volume": "volume",
    "adj close": "adj_close",
    "adj_close": "adj_close",
    "y": "x0",
    "target": "x0",
}


def canonical_columns(frame: pd.DataFrame, source: str = "<frame>") -> pd.DataFrame:
    """Rename the usual layouts' columns to chaosfm's (case-insensitive); keep the rest.

    Raises:
        MissingColumnError: two columns map to the same canonical name.
    """
    renamed: dict[str, str] = {}
    taken: dict[str, str] = {}
    for column in frame.columns:
        key = str(column).strip().lower()
        target = _ALIASES.get(key)
        if target is None and _STATE_COLUMN.match(key):
            target = key
        if target is None:
            continue
        if target in taken:
            raise MissingColumnError(
                f"columns {taken[target]!r} and {column!r} both mean {target!r}; keep one",
                source=source,
                column=str(column),
                rule="one column per meaning",
            )
        taken[target] = str(column)
        renamed[column] = target
    return frame.rename(columns=renamed)


def frame_kind(frame: pd.DataFrame) -> str:
    """``"market"`` when the frame has any OHLCV column (a close-only frame too), else
    ``"trajectory"``."""
    return "market" if any(c in frame.columns for c in MARKET_COLUMNS) else "trajectory"


def has_ohlc(frame: pd.DataFrame) -> bool:
    """True when the frame has open, high and low beside its close (whole candles); False for a
    close-only frame or a trajectory."""
    return all(c in frame.columns for c in PRICE_COLUMNS)


def require_ohlc(frame: pd.DataFrame, who: str) -> None:
    """Raise unless ``frame`` has whole candles: the one check of everything that reads open,
    high and low (range-based variance, candle shapes, candle tokenizers).

    Args:
        frame: a market frame.
        who: what needs the candles, named first in the message (``"har_rv"``).

    Raises:
        MissingColumnError: naming ``who`` and the missing columns; for a close-only frame it
            also names the models that read the close alone.
    """
    if has_ohlc(frame):
        return
    missing = [c for c in PRICE_COLUMNS if c not in frame.columns]
    if "close" in frame.columns and len(missing) == len(OHLC_COLUMNS):
        what = f"this frame has close only (a close-only frame: use {_CLOSE_ONLY_MODELS})"
    else:
        what = f"this frame lacks {', '.join(missing)}"
    raise MissingColumnError(
        f"{who} needs open, high and low columns; {what}",
        source=str(frame.attrs.get("name", "<frame>")),
        rule="open, high and low columns",
    )


def state_columns(frame: pd.DataFrame) -> list[str]:
    """The ``x0..xk`` columns of a trajectory frame, in numeric order."""
    found = [c for c in frame.columns if isinstance(c, str) and _STATE_COLUMN.match(c)]
    return sorted(found, key=lambda c: int(c[1:]))


def target_columns(frame: pd.DataFrame) -> list[str]:
    """What forecasters predict: ``close`` for market data, every state column otherwise."""
    return ["close"] if frame_kind(frame) == "market" else state_columns(frame)


def _line(row: int, line_offset: int | None) -> int | None:
    return None if line_offset is None else row + line_offset


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


_SLASHED_DATE = re.compile(r"^\s*(\d{1,2})([/.-])(\d{1,2})\2(\d{4}|\d{2})(?:[ T](\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?))?\s*$")
"""``01/02/2024`` (``.`` or ``-`` too, optional time): month-first or day-first, the text cannot say."""
_OFFSET = re.compile(r"\d:\d{2}(?::\d{2}(?:\.\d+)?)?\s*(Z|[+-]\d{2}:?\d{2})\s*$")
"""A time of day followed by its UTC offset (``10:00:00+02:00``, ``10:00Z``)."""


def _has_offset(text: pd.Series) -> np.ndarray:
    """Which timestamps end in a UTC offset: a cheap look at the last characters, then the pattern
    on the few that might (a million naive timestamps cost no regular expression)."""
    stripped = text.str.rstrip()
    signs = ("+", "-")
    maybe = (stripped.str.endswith("Z") | stripped.str.slice(-5, -4).isin(signs)
             | (stripped.str.slice(-6, -5).isin(signs) & (stripped.str.slice(-3, -2) == ":")))
    maybe = maybe.fillna(False).to_numpy(dtype=bool)
    aware = np.zeros(len(text), dtype=bool)
    if maybe.any():
        pattern = _OFFSET.pattern.replace("(Z|", "(?:Z|")
        aware[maybe] = text[maybe].str.contains(pattern, regex=True, na=False).to_numpy(dtype=bool)
    return aware


def _timestamp_error(message: str, source: str, row: int | None, line_offset: int | None) -> NonNumericError:
    return NonNumericError(message, source=source, row=row, line=None if row is None else _line(row, line_offset),
                           column="timestamp", rule="parsable timestamps")


def _to_utc(parsed: pd.Series, zone: str, attrs: dict) -> pd.Series:
    """Aware timestamps as naive UTC; the zone (or the offsets) they were written in kept in attrs."""
    attrs["timezone"] = zone
    return parsed.dt.tz_convert("UTC").dt.tz_localize(None)


def _parse_slashed(
    text: pd.Series, matches: list[re.Match], dayfirst: bool, source: str, line_offset: int | None
) -> pd.Series:
    """Dates like ``03/04/2024``: month first unless ``dayfirst``, each row read the one way; a row
    that only reads the other way is an error suggesting the other."""
    first = np.array([int(m.group(1)) for m in matches])
    second = np.array([int(m.group(3)) for m in matches])
    day, month = (first, second) if dayfirst else (second, first)
    impossible = (month < 1) | (month > 12) | (day < 1) | (day > 31)
    if impossible.any():
        row = _first(impossible)
        other = "month-first (drop --dayfirst)" if dayfirst else "day-first: DD/MM (--dayfirst would read them so)"
        raise _timestamp_error(
            f"timestamp {text.iloc[row]!r} is not a {'day' if dayfirst else 'month'}-first date; the dates look "
            f"{other}, or give --date-format", source, row, line_offset)
    years = [m.group(4) for m in matches]
    year = np.array([int(y) + (2000 if int(y) < 69 else 1900) if len(y) == 2 else int(y) for y in years])
    times = pd.to_timedelta([m.group(5) + (":00" if m.group(5) and m.group(5).count(":") == 1 else "")
                             if m.group(5) else "0s" for m in matches])
    dates = pd.to_datetime(pd.DataFrame({"year": year, "month": month, "day": day}), errors="coerce")
    bad = dates.isna().to_numpy()
    if bad.any():
        row = _first(bad)
        raise _timestamp_error(f"timestamp {text.iloc[row]!r} is not a date", source, row, line_offset)
    return pd.Series(dates.to_numpy() + times.to_numpy(), index=text.index)


def _dayfirst_hint(
    text: pd.Series, matches: list[re.Match], asset: pd.Series, parsed: pd.Series, source: str,
    line_offset: int | None,
) -> None:
    """Every date reads both ways, month-first out of order and day-first in order: say so."""
    if not all(int(m.group(3)) <= 12 for m in matches):
        return

    def ordered(stamps: pd.Series, newest_first: bool = False) -> bool:
        frame = pd.DataFrame({"a": asset.to_numpy(), "t": stamps.to_numpy()})
        return all((part.is_monotonic_decreasing if newest_first else part.is_monotonic_increasing) and part.is_unique
                   for _, part in frame.groupby("a", sort=False)["t"])

    if ordered(parsed) or ordered(parsed, newest_first=True):
        return
    swapped = _parse_slashed(text, matches, True, source, line_offset)
    if ordered(swapped) or ordered(swapped, newest_first=True):
        raise TimestampOrderError(
            "read month-first (MM/DD), the dates are out of order; read day-first (DD/MM) they are in order: "
            "the file is day-first (--dayfirst reads it so, or give --date-format)",
            source=source, column="timestamp",
        )


def _parse_timestamps(
    values: pd.Series,
    source: str,
    line_offset: int | None,
    *,
    asset: pd.Series | None = None,
    dayfirst: bool = False,
    date_format: str | None = None,
    attrs: dict | None = None,
) -> pd.Series:
    """Timestamps as datetimes (naive; aware ones converted to UTC, their zone in ``attrs["timezone"]``)
    or numbers."""
    attrs = {} if attrs is None else attrs
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        zone = getattr(values.dt, "tz", None)
        return values if zone is None else _to_utc(values, str(zone), attrs)
    if pd.api.types.is_bool_dtype(values.dtype):
        raise NonNumericError(
            "timestamps are booleans", source=source, column="timestamp", rule="parsable timestamps"
        )
    if date_format is None and pd.api.types.is_numeric_dtype(values.dtype):
        return values.astype(np.float64) if values.dtype.kind == "f" else values.astype(np.int64)
    if date_format is not None:
        parsed = pd.to_datetime(values.astype(str), format=date_format, errors="coerce")
        bad = parsed.isna().to_numpy()
        if bad.any():
            row = _first(bad)
            raise _timestamp_error(f"timestamp {values.iloc[row]!r} does not match --date-format {date_format!r}",
                                   source, row, line_offset)
        zone = getattr(parsed.dt, "tz", None)
        return parsed if zone is None else _to_utc(parsed, str(zone), attrs)
    # Text: numbers stay numbers (e.g. step indices of a trajectory); anything else must be a date.
    as_number = pd.to_numeric(values, errors="coerce")
    if as_number.notna().all():
        return as_number
    text = values.astype("string")
    first = text.iloc[0]
    if isinstance(first, str) and _SLASHED_DATE.match(first):  # only then is every row matched
        matches = [_SLASHED_DATE.match(v) if isinstance(v, str) else None for v in text.tolist()]
        if all(m is not None for m in matches):
            parsed = _parse_slashed(text, matches, dayfirst, source, line_offset)
            if not dayfirst and asset is not None:
                _dayfirst_hint(text, matches, asset, parsed, source, line_offset)
            return parsed
    aware = _has_offset(text)
    if aware.any() and not aware.all():
        row = _first(~aware if aware[0] else aware)
        raise _timestamp_error(
            f"timestamp {text.iloc[row]!r} has {'no' if aware[0] else 'a'} UTC offset, row 0 "
            f"{'has one' if aware[0] else 'has none'}: timestamps mix time zones and local times",
            source, row, line_offset)
    try:
        parsed = pd.to_datetime(values, errors="raise", format="mixed", dayfirst=dayfirst, utc=bool(aware.all()))
        if aware.all():
            offsets = text.str.extract(_OFFSET.pattern, expand=False).unique()
            written = sorted({"+00:00" if m == "Z" else m for m in offsets})
            return _to_utc(parsed, ", ".join(written), attrs)
        zone = getattr(parsed.dt, "tz", None)
        return parsed if zone is None else _to_utc(parsed, str(zone), attrs)
    except (ValueError, TypeError, OverflowError):
        pass
    for row, value in enumerate(values.tolist()):
        try:
            pd.Timestamp(value)
            if value is None or (isinstance(value, float) and np.isnan(value)):
                raise ValueError
        except (ValueError, TypeError, OverflowError):
            raise NonNumericError(
                f"timestamp {value!r} is not a date or a number (--date-format FMT reads other layouts)",
                source=source,
                row=row,
                line=_line(row, line_offset),
                column="timestamp",
                rule="parsable timestamps",
            ) from None
    raise NonNumericError(
        "timestamps mix formats that cannot be put on one clock (--date-format FMT reads one layout)",
        source=source,
        column="timestamp",
        rule="parsable timestamps",
    )


def _to_float(frame: pd.DataFrame, column: str, source: str, line_offset: int | None) -> np.ndarray:
    values = frame[column]
    if pd.api.types.is_bool_dtype(values.dtype) or values.dtype.kind in "mM":
        raise NonNumericError(
            f"column has dtype {values.dtype}, not numbers", source=source, column=column
        )
    numeric = pd.to_numeric(values, errors="coerce")
    bad = (numeric.isna() & values.notna()).to_numpy()
    if bad.any():
        row = _first(bad)
        raise NonNumericError(
            f"{values.iloc[row]!r} is not a number",
            source=source,
            row=row,
            line=_line(row, line_offset),
            column=column,
        )
    return numeric.to_numpy(dtype=np.float64, na_value=np.nan)


def validate(
    frame: pd.DataFrame,
    source: str = "<frame>",
    *,
    repair: bool = False,
    line_offset: int | None = None,
    default_asset: str | None = None,
    dayfirst: bool = False,
    date_format: str | None = None,
) -> pd.DataFrame:
    """Check a frame against every rule of DESIGN.md and return it in canonical form.

    Canonical form: canonical column names, ``asset`` as str, numeric columns as float64, rows
    sorted by asset then timestamp (a stable sort: the order within an asset is what was checked).
    A market frame with none of open, high and low is close-only: it needs ``close`` (``volume``
    optional) and keeps every other rule; one with some of them needs all of OHLCV.

    Args:
        frame: the data, in any of the layouts :func:`canonical_columns` knows.
        source: file path or dataset name, used in error messages.
        repair: drop rows that break a rule (non-finite, non-positive prices, negative volume,
            duplicate timestamps, keeping the last), widen high/low to contain open/close, sort
            timestamps, and say what was done; otherwise raise on the first broken rule.
        line_offset: add this to a 0-based row to get the file's line number (2 for a CSV with a
            header), so messages can point at the line.
        default_asset: asset name used when the frame has no ``asset`` column.
        dayfirst: read ``03/04/2024`` as 3 April (default: month first; a file whose dates are in
            order only when read day first is an error that says so).
        date_format: a ``strftime`` format every timestamp must match (``"%d.%m.%Y %H:%M"``).

    Timestamps with a UTC offset or a time zone become naive UTC; ``frame.attrs["timezone"]`` keeps
    the zone (or the offsets, ``"+01:00, +02:00"`` across a DST change) they were written in.

    Raises:
        DataError: a subclass naming the source, the row and the rule.
    """
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"expected a pandas DataFrame, got {type(frame).__name__}", source=source)
    if len(frame) == 0 or len(frame.columns) == 0:
        raise EmptyDataError("no rows", source=source)
    frame = canonical_columns(frame, source).reset_index(drop=True)
    kind = frame_kind(frame)
    if "timestamp" not in frame.columns:
        raise MissingColumnError(
            f"no timestamp column (looked for timestamp, date, datetime, time, ds); "
            f"columns are {list(map(str, frame.columns))}",
            source=source,
        )
    candles = any(c in frame.columns for c in OHLC_COLUMNS)
    channels: dict[str, str] = {}
    if kind == "market":
        # Any of open/high/low makes it a candle frame, which needs every OHLCV column; without
        # them it is a close-only frame, which needs close and may have volume.
        required = MARKET_COLUMNS if candles else ("close",)
        missing = [c for c in required if c not in frame.columns]
        if missing:
            raise MissingColumnError(
                f"market data needs {', '.join(MARKET_COLUMNS)} (or close alone, volume optional); "
                f"missing {', '.join(missing)}",
                source=source,
            )
        numeric = [c for c in MARKET_COLUMNS if c in frame.columns]
    else:
        numeric = state_columns(frame)
        if not numeric:
            frame, channels = _wide_channels(frame)
            numeric = list(channels)
        if not numeric:
            raise MissingColumnError(
                "no value columns: expected open/high/low/close/volume, x0..xk, y or target, or only "
                "numeric columns beside the timestamp (one channel each); "
                f"columns are {list(map(str, frame.columns))}",
                source=source,
            )
    repairs: list[str] = []
    frame = frame.copy()
    if "asset" not in frame.columns:
        frame.insert(0, "asset", default_asset or "series")
    bad_asset = frame["asset"].isna().to_numpy()
    if bad_asset.any():
        row = _first(bad_asset)
        raise NonFiniteError(
            "asset is missing", source=source, row=row, line=_line(row, line_offset), column="asset"
        )
    frame["asset"] = frame["asset"].astype(str)
    zone: dict = {}
    frame["timestamp"] = _parse_timestamps(frame["timestamp"], source, line_offset, asset=frame["asset"],
                                           dayfirst=dayfirst, date_format=date_format, attrs=zone)
    for column in numeric:
        frame[column] = _to_float(frame, column, source, line_offset)

    def drop(mask: np.ndarray, error: type[DataError], message: str, column: str | None,
             rule: str | None = None) -> None:
        nonlocal frame
        if not mask.any():
            return
        row = _first(mask)
        count = int(mask.sum())
        if not repair:
            value = frame[column].iloc[row] if column is not None else None
            hint = repair_hint(f"drop the {count} row(s) breaking this rule")
            raise error(f"{message.format(row=row, value=value)} ({hint})",
                        source=source, row=row, line=_line(row, line_offset), column=column, rule=rule)
        repairs.append(f"dropped {count} row(s) breaking [{rule or error.rule_name}]")
        frame = frame.loc[~mask].reset_index(drop=True)

    stamps = frame["timestamp"]
    stamp_missing = stamps.isna().to_numpy().copy()
    if stamps.dtype.kind == "f":
        stamp_missing |= ~np.isfinite(stamps.to_numpy())
    drop(stamp_missing, NonFiniteError, "timestamp is missing or not finite", "timestamp")
    for column in numeric:
        values = frame[column].to_numpy()
        drop(~np.isfinite(values), NonFiniteError, "value is NaN or infinite", column)
        values = frame[column].to_numpy()
        drop(np.abs(values) > _FLOAT32_MAX, NonFiniteError,
             f"{{value:g}} is beyond float32's largest value {_FLOAT32_MAX:.4g} (models compute in float32)",
             column, FLOAT32_RULE)
    if kind == "market":
        for column in PRICE_COLUMNS if candles else ("close",):
            values = frame[column].to_numpy()
            drop(values <= 0, NonPositivePriceError, f"{column} must be > 0", column)
            values = frame[column].to_numpy()
            drop(values.astype(np.float32) == 0, NonPositivePriceError,
                 f"{column} {{value:g}} > 0 rounds to 0 in float32 (models compute in float32)", column,
                 FLOAT32_RULE)
        if "volume" in frame.columns:
            drop(frame["volume"].to_numpy() < 0, NegativeVolumeError, "volume is negative", "volume")
    if kind == "market" and candles:
        o, h, lo, c = (frame[k].to_numpy() for k in PRICE_COLUMNS)
        bad_high = h < np.maximum.reduce([o, c, lo])
        bad_low = lo > np.minimum(o, c)
        shape_bad = bad_high | bad_low
        if shape_bad.any():
            row = _first(shape_bad)
            if not repair:
                which = "high is below open, close or low" if bad_high[row] else "low is above open or close"
                raise CandleShapeError(
                    f"{which} (open={o[row]:g}, high={h[row]:g}, low={lo[row]:g}, close={c[row]:g}) "
                    f"({repair_hint(f'widen high/low of the {int(shape_bad.sum())} candle(s) to contain open/close')})",
                    source=source, row=row, line=_line(row, line_offset), column="high" if bad_high[row] else "low",
                )
            frame["high"] = np.maximum.reduce([o, c, lo, h])
            frame["low"] = np.minimum.reduce([o, c, lo])
            repairs.append(f"widened high/low of {int(shape_bad.sum())} candle(s) to contain open/close")
    frame = _check_order(frame, source, repair, line_offset, repairs)
    if len(frame) == 0:
        raise EmptyDataError("no rows left after repair", source=source)
    for message in repairs:
        say(f"{source}: repair: {message}")
    frame.attrs["repairs"] = repairs
    frame.attrs.setdefault("kind", kind)
    if zone:
        frame.attrs["timezone"] = zone["timezone"]
    if channels:
        frame.attrs["channels"] = channels
    return frame


def _wide_channels(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str]]:
    """A wide file of channels (a timestamp and numeric columns of any names, no OHLCV) as one
    trajectory: its columns become ``x0..xk`` in file order, their names kept in
    ``attrs["channels"]``. Nothing when a column other than asset and timestamp is not numbers."""
    others = [c for c in frame.columns if c not in ("asset", "timestamp")]
    if not others:
        return frame, {}
    for column in others:
        values = frame[column]
        if pd.api.types.is_bool_dtype(values.dtype) or values.dtype.kind in "mM":
            return frame, {}
        numeric = pd.to_numeric(values, errors="coerce")
        if (numeric.isna() & values.notna()).any() or numeric.isna().all():
            return frame, {}
    names = {column: f"x{i}" for i, column in enumerate(others)}
    return frame.rename(columns=names), {x: str(column) for column, x in names.items()}


def repair_hint(what: str) -> str:
    """The end of an error message for a rule ``repair`` fixes: what it would do."""
    return f"--repair would {what}"


def _check_order(
    frame: pd.DataFrame, source: str, repair: bool, line_offset: int | None, repairs: list[str]
) -> pd.DataFrame:
    stamps = frame["timestamp"]
    same_asset = frame["asset"].to_numpy()[1:] == frame["asset"].to_numpy()[:-1]
    if stamps.dtype.kind == "M":
        step = np.diff(stamps.to_numpy().astype("datetime64[ns]").astype(np.int64))
    else:
        step = np.diff(stamps.to_numpy().astype(np.float64))
    bad = same_asset & (step <= 0)
    # An asset reappearing after another one is unsorted too.
    first_seen = ~frame.duplicated("asset").to_numpy()
    starts = np.flatnonzero(~np.r_[False, same_asset])
    reappears = starts[~first_seen[starts]]
    if bad.any() or reappears.size:
        candidates = list(np.flatnonzero(bad) + 1) + list(reappears)
        row = int(min(candidates))
        duplicates = int(frame.duplicated(["asset", "timestamp"]).sum())
        newest_first = not reappears.size and bool((step[same_asset] < 0).all())
        if not repair:
            dup = row in set(np.flatnonzero(bad) + 1) and step[row - 1] == 0
            if newest_first:
                what = "timestamps are newest first (each row before the previous one)"
                hint = repair_hint(f"sort the {len(frame)} rows oldest first")
            else:
                what = "duplicate timestamp" if dup else "timestamp not after the previous one of this asset"
                unsorted = bool(reappears.size) or bool((step[same_asset] < 0).any())
                fixes = ["sort the rows by timestamp"] if unsorted else []
                if duplicates:
                    fixes.append(f"keep the last row of each duplicate timestamp ({duplicates} row(s) dropped)")
                hint = repair_hint(" and ".join(fixes))
            raise TimestampOrderError(
                f"{what} ({frame['timestamp'].iloc[row]!s}, asset {frame['asset'].iloc[row]!r}) ({hint})",
                source=source, row=row, line=_line(row, line_offset), column="timestamp",
            )
        late = _out_of_order(frame)
        total = len(frame)
        frame = frame.sort_values(["asset", "timestamp"], kind="stable")
        frame = frame.drop_duplicates(["asset", "timestamp"], keep="last").reset_index(drop=True)
        if newest_first:
            repairs.append(f"sorted the {total} row(s) oldest first (the file was newest first)")
        elif late or reappears.size:
            repairs.append(f"sorted the rows by timestamp ({late} of {total} row(s) were out of order)")
        if duplicates:
            repairs.append(f"dropped {duplicates} duplicate timestamp row(s), keeping the last of each")
    return frame.sort_values("asset", kind="stable").reset_index(drop=True)


def _out_of_order(frame: pd.DataFrame) -> int:
    """Rows whose timestamp is before an earlier row's of the same asset."""
    stamps = frame["timestamp"]
    values = stamps.to_numpy().astype("datetime64[ns]").astype(np.int64) if stamps.dtype.kind == "M" \
        else stamps.to_numpy().astype(np.float64)
    latest = pd.Series(values).groupby(frame["asset"].to_numpy(), sort=False).cummax().to_numpy()
    return int((values < latest).sum())


def assets(frame: pd.DataFrame) -> list[str]:
    """Asset names in order of first appearance."""
    return list(dict.fromkeys(frame["asset"].tolist()))


def split_assets(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """One frame per asset, each with a fresh 0-based index."""
    return {
        name: part.reset_index(drop=True)
        for name, part in frame.groupby("asset", sort=False)
    }


def require_columns(frame: pd.DataFrame, columns: Sequence[str], source: str = "<frame>") -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise MissingColumnError(f"missing {', '.join(missing)}", source=source)
