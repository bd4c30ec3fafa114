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


def _parse_timestamps(
    values: pd.Series, source: str, line_offset: int | None
) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return values
    if pd.api.types.is_bool_dtype(values.dtype):
        raise NonNumericError(
            "timestamps are booleans", source=source, column="timestamp", rule="parsable timestamps"
        )
    if pd.api.types.is_numeric_dtype(values.dtype):
        return values.astype(np.float64) if values.dtype.kind == "f" else values.astype(np.int64)
    # Text: numbers stay numbers (e.g. step indices of a trajectory); anything else must be a date.
    as_number = pd.to_numeric(values, errors="coerce")
    if as_number.notna().all():
        return as_number
    try:
        parsed = pd.to_datetime(values, errors="raise", format="mixed")
        if getattr(parsed.dt, "tz", None) is not None:
            parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
        return parsed
    except (ValueError, TypeError, OverflowError):
        pass
    for row, value in enumerate(values.tolist()):
        try:
            pd.Timestamp(value)
            if value is None or (isinstance(value, float) and np.isnan(value)):
                raise ValueError
        except (ValueError, TypeError, OverflowError):
            raise NonNumericError(
                f"timestamp {value!r} is not a date or a number",
                source=source,
                row=row,
                line=_line(row, line_offset),
                column="timestamp",
                rule="parsable timestamps",
            ) from None
    raise NonNumericError(
        "timestamps mix time zones or formats that cannot be put on one clock",
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
            raise MissingColumnError(
                "no value columns: expected open/high/low/close/volume, x0..xk, y or target; "
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
    frame["timestamp"] = _parse_timestamps(frame["timestamp"], source, line_offset)
    for column in numeric:
        frame[column] = _to_float(frame, column, source, line_offset)

    def drop(mask: np.ndarray, error: type[DataError], message: str, column: str | None,
             rule: str | None = None) -> None:
        nonlocal frame
        if not mask.any():
            return
        row = _first(mask)
        if not repair:
            value = frame[column].iloc[row] if column is not None else None
            raise error(message.format(row=row, value=value), source=source, row=row,
                        line=_line(row, line_offset), column=column, rule=rule)
        repairs.append(f"dropped {int(mask.sum())} row(s) breaking [{rule or error.rule_name}]")
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
                    f"{which} (open={o[row]:g}, high={h[row]:g}, low={lo[row]:g}, close={c[row]:g})",
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
    return frame


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
        if not repair:
            dup = row in set(np.flatnonzero(bad) + 1) and step[row - 1] == 0
            what = "duplicate timestamp" if dup else "timestamp not after the previous one of this asset"
            raise TimestampOrderError(
                f"{what} ({frame['timestamp'].iloc[row]!s}, asset {frame['asset'].iloc[row]!r})",
                source=source, row=row, line=_line(row, line_offset), column="timestamp",
            )
        before = len(frame)
        frame = frame.sort_values(["asset", "timestamp"], kind="stable")
        frame = frame.drop_duplicates(["asset", "timestamp"], keep="last").reset_index(drop=True)
        repairs.append(
            f"sorted timestamps and dropped {before - len(frame)} duplicate timestamp row(s)"
        )
    return frame.sort_values("asset", kind="stable").reset_index(drop=True)


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
