"""A user's own trajectory: the ``asset, timestamp, x0..xk`` layout from the shapes people export,
the time per row read from the timestamps, and the exponent and time step recorded beside a file.

A trajectory frame has one row per time step of each system (``asset``) and one column ``x<i>``
per channel (a coordinate of the state, a sensor). Valid prediction time needs two numbers the
rows do not carry: the system's largest Lyapunov exponent (per unit time) and ``dt``, the time
between rows. A built-in system records both in ``frame.attrs``; a user's file records them in a
JSON sidecar (:func:`time_metadata`), or ``dt`` is read from evenly spaced timestamps
(:func:`time_step`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chaosfm.data._errors import (
    DataError,
    EmptyDataError,
    FileFormatError,
    MissingColumnError,
    NonFiniteError,
    NonNumericError,
)
from chaosfm.data._frame import _parse_timestamps, _to_float, validate

TIME_KEYS = ("lyapunov_exponent", "dt")
"""What a sidecar may say: the largest Lyapunov exponent (per unit time) and the time per row."""

SPACING_TOLERANCE = 0.01
"""Evenly spaced timestamps: every step within 1% of the median step. Timestamps rounded on export
pass; a missing row (a step twice the others) does not."""


def to_trajectory_frame(
    frame: pd.DataFrame,
    *,
    timestamp: str = "timestamp",
    columns: Sequence[str] | None = None,
    asset: str | None = None,
    channel: str | None = None,
    value: str | None = None,
    name: str = "series",
) -> pd.DataFrame:
    """Bring a wide or a long multichannel frame into the layout ``asset, timestamp, x0..xk``.

    Two layouts are read:

    - **wide** (``channel`` is None): one row per time step, one column per channel, e.g.
      Chronos' multivariate ``item_id, timestamp, target_0, target_1`` (``asset="item_id"``) or
      any named columns (``t, x, y, z`` with ``timestamp="t"``).
    - **long** (``channel`` and ``value`` given): one row per time step and channel, e.g. Nixtla's
      ``unique_id, ds, y`` (``timestamp="ds", channel="unique_id", value="y"``). Each
      ``unique_id`` is read as **one channel of one system**, and the frame is pivoted to one
      column per channel. This is the reading that needs a helper: a Nixtla frame whose
      ``unique_id`` s are separate univariate series already loads as it is (``load`` reads
      ``unique_id`` as the asset and ``y`` as ``x0``, and each series gets its own VPT), and it is
      how Nixtla's multivariate models (neuralforecast's ``TSMixer``, ``iTransformer``, with
      ``n_series`` = the number of ids) read a frame. Several systems in one long frame: name the
      column that tells them apart with ``asset``.

    The channels become ``x0..xk`` in the order of ``columns`` (default: wide, every column but
    ``timestamp`` and ``asset``; long, the channel ids in order of first appearance), and
    ``attrs["channels"]`` maps each ``x<i>`` back to its original name (a Parquet file written
    by pandas keeps it; a CSV does not). Other columns are dropped.

    Args:
        frame: the data.
        timestamp: the column of times (dates, or numbers in the time unit of the exponent).
        columns: the channels to keep, in order: column names (wide) or channel ids (long).
        asset: the column naming the system each row belongs to; None: the frame is one system.
        channel: long layout: the column naming each row's channel.
        value: long layout: the column of values.
        name: the asset name when ``asset`` is None.

    Returns:
        A validated trajectory frame (see :func:`chaosfm.data.validate`).

    Raises:
        DataError: a subclass naming the column and the rule: a missing column, a non-numeric or
            non-finite value, a channel repeated or missing at a time step, unordered times.
    """
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"expected a pandas DataFrame, got {type(frame).__name__}")
    if len(frame) == 0:
        raise EmptyDataError("no rows")
    if (channel is None) != (value is None):
        raise DataError(
            "give channel and value together (long layout) or neither (wide layout); "
            f"got channel={channel!r}, value={value!r}", rule="channel and value together",
        )
    keys = [timestamp] if asset is None else [asset, timestamp]
    _require(frame, [*keys, *([channel, value] if channel is not None else [])])
    frame = frame.reset_index(drop=True)
    stamps = _parse_timestamps(frame[timestamp], "<frame>", None)
    systems = frame[asset].astype(str) if asset is not None else pd.Series(name, index=frame.index)
    if channel is None:
        names = _wide_channels(frame, columns, keys)
        try:
            values = {f"x{i}": _numbers(frame, c) for i, c in enumerate(names)}
        except NonNumericError as error:
            if columns is not None:
                raise
            raise NonNumericError(
                "holds values that are not numbers, and with no columns=[...] every column but the timestamp "
                "and asset is a channel: name the system's column with asset=... or the channels with columns=[...]",
                row=error.row, column=error.column,
            ) from None
        out = pd.DataFrame({"asset": systems, "timestamp": stamps, **values})
    else:
        out, names = _pivot(frame, systems, stamps, channel, value, columns)
    out = validate(out)
    out.attrs["channels"] = {f"x{i}": str(c) for i, c in enumerate(names)}
    return out


def _require(frame: pd.DataFrame, names: Sequence[Any]) -> None:
    for column in names:
        if column not in frame.columns:
            raise MissingColumnError(
                f"no such column; columns are {list(map(str, frame.columns))}", column=str(column),
            )


def _wide_channels(frame: pd.DataFrame, columns: Sequence[str] | None, keys: list[str]) -> list[Any]:
    if columns is None:
        names = [c for c in frame.columns if c not in keys]
    else:
        names = list(columns)
        _require(frame, names)
        for column in names:
            if column in keys:
                raise DataError(
                    "is the timestamp or asset column, not a channel", column=str(column),
                    rule="channels are value columns",
                )
    if not names:
        raise MissingColumnError("no channel columns besides the timestamp and asset", rule="one channel or more")
    repeated = sorted({str(c) for c in names if names.count(c) > 1})
    if repeated:
        raise DataError(f"channel(s) {repeated} named twice", rule="each channel once")
    return names


def _numbers(frame: pd.DataFrame, column: Any) -> np.ndarray:
    """A channel as float64, naming the column and row of the first value that is not a finite number."""
    numeric = _to_float(frame, column, "<frame>", None)
    bad = ~np.isfinite(numeric)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise NonFiniteError("value is NaN or infinite", row=row, column=str(column))
    return numeric


def _pivot(
    frame: pd.DataFrame, systems: pd.Series, stamps: pd.Series, channel: str, value: str,
    columns: Sequence[Any] | None,
) -> tuple[pd.DataFrame, list[Any]]:
    """Long rows ``(system, time, channel, value)`` -> one row per (system, time), one column per channel."""
    long = pd.DataFrame({
        "asset": systems, "timestamp": stamps, "channel": frame[channel], "value": _numbers(frame, value),
    })
    names = list(dict.fromkeys(long["channel"].tolist())) if columns is None else list(columns)
    missing = [c for c in names if c not in set(long["channel"])]
    if missing:
        raise MissingColumnError(f"no rows of channel(s) {missing}", column=channel, rule="channels present")
    if columns is not None and len(set(names)) != len(names):
        raise DataError(f"channel(s) named twice in columns: {names}", column=channel, rule="each channel once")
    long = long[long["channel"].isin(names)]
    repeated = long.duplicated(["asset", "timestamp", "channel"]).to_numpy()
    if repeated.any():
        row = int(long.index[np.flatnonzero(repeated)[0]])
        raise DataError(
            f"channel {frame[channel].iloc[row]!r} has a second value at {stamps.iloc[row]!s}",
            row=row, column=channel, rule="one value per channel and time step",
        )
    wide = long.pivot(index=["asset", "timestamp"], columns="channel", values="value")
    wide = wide.reindex(columns=names)
    holes = wide.isna().to_numpy()
    if holes.any():
        at, which = np.argwhere(holes)[0]
        system, when = wide.index[at]
        raise MissingColumnError(
            f"channel {names[which]!r} has no value at {when!s} (asset {system!r}), where another channel "
            "has one", column=channel, rule="every channel at every time step",
        )
    wide = wide.reset_index()
    wide.columns = ["asset", "timestamp", *(f"x{i}" for i in range(len(names)))]
    return wide.reset_index(drop=True), names


def time_step(frame: pd.DataFrame) -> float:
    """The time between consecutive rows, read from evenly spaced numeric timestamps.

    Evenly spaced: every step of every asset within :data:`SPACING_TOLERANCE` (1%) of the median
    step. The mean step is returned, to 12 significant digits (times written as ``0.1 * i`` give
    ``0.1``; times rounded on export average out).

    Args:
        frame: a validated frame (sorted by asset, then time).

    Returns:
        ``dt`` in the unit of the timestamps.

    Raises:
        DataError: naming ``timestamp`` and the rule: the timestamps are dates (they carry no unit
            an exponent could share), an asset has fewer than two rows, or a step is off by more
            than 1% (naming its row: a missing row, a gap, assets sampled at different rates).
    """
    source = str(frame.attrs.get("source", "<frame>"))
    stamps = frame["timestamp"]
    if stamps.dtype.kind == "M":
        raise DataError(
            "timestamps are dates: the time per row must be given in the time unit of the exponent",
            source=source, column="timestamp", rule="numeric timestamps to infer dt",
        )
    times = stamps.to_numpy(dtype=np.float64)
    names = frame["asset"].to_numpy()
    same = names[1:] == names[:-1]
    steps = np.diff(times)[same]
    rows = np.flatnonzero(same) + 1
    if steps.size == 0 or len(set(names)) > steps.size:
        raise DataError(
            "an asset has fewer than two rows", source=source, column="timestamp", rule="two rows to infer dt"
        )
    usual = float(np.median(steps))  # the median: one gap must not shift what the others are measured against
    off = np.abs(steps - usual) > SPACING_TOLERANCE * usual
    if off.any():
        first = int(np.flatnonzero(off)[0])
        raise DataError(
            f"timestamps are not evenly spaced: the step to this row is {steps[first]:g}, the usual step is "
            f"{usual:g}", source=source, row=int(rows[first]), column="timestamp",
            rule=f"every step within {SPACING_TOLERANCE:.0%} of the median to infer dt",
        )
    return float(f"{steps.mean():.12g}")


def time_metadata(attrs: Mapping[str, Any], sidecar: Path) -> dict[str, float]:
    """The largest Lyapunov exponent and ``dt`` recorded for a trajectory file, checked.

    Two places are read, the second winning key by key: the file's own attrs (a Parquet file
    written by pandas stores ``frame.attrs`` in its metadata, so a frame of
    :func:`chaosfm.data.chaotic_system` saved with ``to_parquet`` keeps them), then the JSON
    sidecar beside the file, ``NAME.json`` for ``NAME.csv`` or ``NAME.parquet``::

        {"lyapunov_exponent": 0.0714, "dt": 0.1}

    Either key may be left out; no other key is allowed.

    Args:
        attrs: the attrs the file was read with.
        sidecar: the path of the sidecar (it need not exist).

    Returns:
        The keys of :data:`TIME_KEYS` found, each a positive finite float.

    Raises:
        FileFormatError: the sidecar is not a JSON object.
        DataError: naming the file and the key: an unknown key, or a value that is not a positive
            finite number.
    """
    source = f"{attrs.get('source', '<frame>')} (its metadata)"
    found = {k: _positive(attrs[k], k, source) for k in TIME_KEYS if attrs.get(k) is not None}
    if not sidecar.is_file():
        return found
    try:
        recorded = json.loads(sidecar.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FileFormatError(f"is not valid JSON: {error}", source=str(sidecar)) from None
    if not isinstance(recorded, dict):
        raise FileFormatError(
            f"must be a JSON object like {{\"lyapunov_exponent\": 0.9056, \"dt\": 0.02}}; got a "
            f"{type(recorded).__name__}", source=str(sidecar),
        )
    unknown = sorted(set(recorded) - set(TIME_KEYS))
    if unknown:
        raise DataError(
            f"unknown key(s) {unknown}; allowed: {', '.join(TIME_KEYS)}", source=str(sidecar), rule="known keys",
        )
    found.update({k: _positive(v, k, str(sidecar)) for k, v in recorded.items()})
    return found


def _positive(value: Any, key: str, source: str) -> float:
    number = value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    if number is None or not math.isfinite(number) or number <= 0:
        raise DataError(
            f"{key} must be a positive, finite number; got {value!r}", source=source, rule=f"{key} > 0 and finite",
        )
    return float(number)
