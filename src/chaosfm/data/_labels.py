"""Supervised windows for long-horizon heads: causal features at t, labels from t+1..t+H, purged splits.

A *window* is one row ``t`` of one asset. Its features use rows ``<= t`` only; its labels use rows
``t+1 .. t+span`` only, with ``span = max(horizon, vol_horizon)``:

- ``forward_return``  ln(c[t+H] / c[t]), the H-row forward log return;
- ``direction``       2 (up) if forward_return > +threshold, 0 (down) if < -threshold, else 1 (flat);
- ``forward_vol``     sqrt(252 * mean(r[t+1..t+V]^2)), the annualised realized volatility of the
                      V = ``vol_horizon`` daily log returns after t (not demeaned, like the
                      ``realized_vol`` feature), ``r[s] = ln(c[s] / c[s-1])``.

Rows without a full label span are unlabelled. :func:`assign_splits` puts each window into the
split that holds its whole label span and *purges* a window whose span crosses a split boundary
(its label would straddle two splits) or starts within ``embargo`` rows after one (López de Prado
2018, AFML sec. 7.4). :func:`check_causal` recomputes features on truncated histories and fails
if any value at or before the truncation point changes.

Dimension letters: T rows of one asset, F features.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from chaosfm.data._errors import DataError, LeakageError
from chaosfm.data._features import candle_features, warmup_rows
from chaosfm.data._fence import as_timestamp_like
from chaosfm.data._frame import frame_kind, require_ohlc

__all__ = [
    "DIRECTION_NAMES",
    "EMBARGOED",
    "PURGED",
    "UNLABELLED",
    "WARMUP",
    "assign_splits",
    "boundary_rows",
    "check_causal",
    "feature_warmup",
    "forward_labels",
    "label_frame",
    "multitask_features",
    "trailing_realized_vol",
]

DIRECTION_NAMES = ("down", "flat", "up")
PERIODS_PER_YEAR = 252  # trading days: the volatilities here are annualised daily ones
# Split codes below zero: why a window belongs to no split.
UNLABELLED, PURGED, EMBARGOED, WARMUP = -1, -2, -3, -4


def forward_labels(
    close: np.ndarray, *, horizon: int = 90, threshold: float = 0.05, vol_horizon: int = 30
) -> dict[str, np.ndarray]:
    """Labels of every row of one asset from its closes (see the module docstring).

    Args:
        close: ``(T,)`` positive closes, oldest first.
        horizon: H, rows ahead of the forward return.
        threshold: |forward return| above which the direction is up or down (a log return).
        vol_horizon: V, rows of the forward realized volatility.

    Returns:
        ``forward_return`` and ``forward_vol`` ``(T,)`` float64 (NaN where the span is not in the
        data) and ``direction`` ``(T,)`` int8 (-1 there).
    """
    if horizon < 1 or vol_horizon < 2:
        raise ValueError(f"need horizon >= 1 and vol_horizon >= 2, got {horizon} and {vol_horizon}")
    if not threshold >= 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    log_close = np.log(np.asarray(close, dtype=np.float64))
    n = log_close.size
    span = max(horizon, vol_horizon)
    labelled = np.arange(n) + span <= n - 1
    forward_return = np.full(n, np.nan)
    forward_return[: max(n - horizon, 0)] = log_close[horizon:] - log_close[: n - horizon]
    squared = np.diff(log_close) ** 2  # squared[s] = r[s+1]^2
    forward_vol = np.full(n, np.nan)
    if n > vol_horizon:
        # Each window summed on its own (not by differencing a cumsum), so no row outside
        # t+1..t+V touches the value, not even through rounding.
        windows = np.lib.stride_tricks.sliding_window_view(squared, vol_horizon)  # row t: r[t+1..t+V]
        forward_vol[: n - vol_horizon] = np.sqrt(PERIODS_PER_YEAR * windows.mean(axis=1))
    forward_return[~labelled] = np.nan
    forward_vol[~labelled] = np.nan
    direction = np.full(n, -1, dtype=np.int8)
    r = forward_return[labelled]
    direction[labelled] = np.where(r > threshold, 2, np.where(r < -threshold, 0, 1))
    return {"forward_return": forward_return, "direction": direction, "forward_vol": forward_vol}


def trailing_realized_vol(close: np.ndarray, window: int) -> np.ndarray:
    """sqrt(252 * mean(r[t-w+1..t]^2)) per row: the annualised realized volatility up to t (NaN
    until ``window`` returns exist). As a forecast of ``forward_vol`` it is the persistence baseline."""
    log_close = np.log(np.asarray(close, dtype=np.float64))
    squared = pd.Series(np.r_[np.nan, np.diff(log_close) ** 2])
    return np.sqrt(PERIODS_PER_YEAR * squared.rolling(window, min_periods=window).mean().to_numpy())


def label_frame(
    frame: pd.DataFrame, *, horizon: int = 90, threshold: float = 0.05, vol_horizon: int = 30
) -> pd.DataFrame:
    """:func:`forward_labels` of every asset of a market frame, plus ``label_end``: the timestamp of
    the last row a label reads (``NaT``/NaN where unlabelled). Same rows and order as ``frame``."""
    _require_market(frame)
    span = max(horizon, vol_horizon)
    parts = []
    for _, part in frame.groupby("asset", sort=False):
        labels = forward_labels(
            part["close"].to_numpy(), horizon=horizon, threshold=threshold, vol_horizon=vol_horizon
        )
        out = pd.DataFrame({"asset": part["asset"].to_numpy(), "timestamp": part["timestamp"].to_numpy(),
                            **labels}, index=part.index)
        out["label_end"] = part["timestamp"].shift(-span).to_numpy()
        parts.append(out)
    return pd.concat(parts).loc[frame.index]


def multitask_features(
    frame: pd.DataFrame,
    *,
    momentum_windows: Sequence[int] = (20, 60, 120, 250),
    vol_windows: Sequence[int] = (30, 60, 120),
    high_window: int = 250,
) -> pd.DataFrame:
    """Causal features for long horizons: the candle features and slower trailing ones.

    Beside :data:`~chaosfm.data.FEATURE_COLUMNS`: ``momentum_k = ln(c[t] / c[t-k])``,
    ``vol_k`` = :func:`trailing_realized_vol` over k rows, and ``drawdown = ln(c[t] / max c[t-w+1..t])``
    with ``w = high_window``. Every one reads rows ``<= t`` only.

    Returns:
        ``asset, timestamp`` and the feature columns, same rows and order as ``frame``.

    Raises:
        MissingColumnError: a close-only frame (the candle features need open, high and low).
    """
    _require_market(frame)
    require_ohlc(frame, "multitask features")  # the candle shapes are among them
    base = candle_features(frame)
    parts = []
    for _, part in frame.groupby("asset", sort=False):
        close = part["close"].to_numpy(dtype=np.float64)
        log_close = pd.Series(np.log(close), index=part.index)
        columns: dict[str, Any] = {}
        for k in momentum_windows:
            columns[f"momentum_{k}"] = (log_close - log_close.shift(k)).to_numpy()
        for k in vol_windows:
            columns[f"vol_{k}"] = trailing_realized_vol(close, k)
        high = log_close.rolling(high_window, min_periods=high_window).max()
        columns["drawdown"] = (log_close - high).to_numpy()
        parts.append(pd.DataFrame(columns, index=part.index))
    return pd.concat([base, pd.concat(parts).loc[frame.index]], axis=1)


def feature_warmup(
    momentum_windows: Sequence[int] = (20, 60, 120, 250),
    vol_windows: Sequence[int] = (30, 60, 120),
    high_window: int = 250,
) -> int:
    """Leading rows of each asset where some :func:`multitask_features` column is NaN."""
    return max(warmup_rows(), *momentum_windows, *vol_windows, high_window - 1)


def boundary_rows(timestamps: Sequence[Any], boundaries: Sequence[Any]) -> list[int]:
    """The last row at or before each boundary timestamp (-1 if none), for :func:`assign_splits`."""
    stamps = pd.Series(timestamps)
    example = stamps.iloc[0] if len(stamps) else 0
    return [int((stamps <= as_timestamp_like(b, example)).sum()) - 1 for b in boundaries]


def assign_splits(
    n_rows: int, span: int, boundaries: Sequence[int], *, embargo: int = 0, warmup: int = 0
) -> np.ndarray:
    """The split of the window at each row ``t``, whose label reads rows ``t+1 .. t+span``.

    Split ``k`` holds rows ``b[k-1]+1 .. b[k]`` (``b[-1] = -1``, the last split runs to the end).
    A window belongs to split ``k`` when its whole label span lies in it; otherwise it gets a code:
    ``PURGED`` (the span crosses a boundary), ``EMBARGOED`` (it starts within ``embargo`` rows after
    a boundary), ``UNLABELLED`` (the span runs past the data), ``WARMUP`` (``t < warmup``: features
    incomplete).

    Args:
        n_rows: rows of the asset.
        span: label span, ``max(horizon, vol_horizon)``.
        boundaries: increasing rows ``b[k]``, the last row of split ``k``.
        embargo: rows after each boundary where no window's label may start.
        warmup: leading rows whose features are incomplete.

    Returns:
        ``(n_rows,)`` int array: split index ``>= 0`` or a negative code.
    """
    bounds = np.asarray(boundaries, dtype=np.int64)
    if bounds.size and np.any(np.diff(bounds) <= 0):
        raise ValueError(f"split boundaries must increase; got {list(boundaries)}")
    if span < 1 or embargo < 0:
        raise ValueError(f"need span >= 1 and embargo >= 0, got {span} and {embargo}")
    t = np.arange(n_rows)
    first, last = t + 1, t + span
    split_first = np.searchsorted(bounds, first, side="left")  # split holding row t+1
    split_last = np.searchsorted(bounds, last, side="left")
    out = split_first.astype(np.int64)
    previous_bound = np.r_[-1, bounds][split_first]  # last row of the split before
    out[(split_first > 0) & (first <= previous_bound + embargo)] = EMBARGOED
    out[split_last != split_first] = PURGED
    out[last > n_rows - 1] = UNLABELLED
    out[t < warmup] = WARMUP
    return out


def check_causal(
    build: Callable[[pd.DataFrame], pd.DataFrame],
    frame: pd.DataFrame,
    rows: Sequence[int],
    *,
    what: str = "features",
) -> None:
    """Raise :class:`LeakageError` unless ``build`` is causal at each of ``rows``.

    For each row ``t`` (a position within every asset), ``build`` is run on the frame cut after
    row ``t`` of each asset and must give, for rows ``<= t``, the values it gives on the whole
    frame (NaN where NaN): a feature that read a later row would change when that row is gone.

    Args:
        build: frame -> feature frame with ``asset, timestamp`` and numeric columns, same rows.
        frame: the full frame.
        rows: truncation points, positions within each asset.
        what: names the features in the message.
    """
    full = build(frame)
    columns = [c for c in full.columns if c not in ("asset", "timestamp")]
    position = frame.groupby("asset", sort=False).cumcount().to_numpy()
    for t in rows:
        kept = position <= t
        cut = frame.loc[kept]
        cut.attrs = dict(frame.attrs)
        short = build(cut)[columns].to_numpy(dtype=np.float64)
        long = full.loc[kept, columns].to_numpy(dtype=np.float64)
        same = np.isclose(short, long, rtol=1e-9, atol=1e-12, equal_nan=True)
        if not same.all():
            row, column = np.argwhere(~same)[0]
            raise LeakageError(
                f"{what} are not causal: column {columns[column]!r} at row {int(row)} changes when "
                f"the rows after row {t} of each asset are removed"
            )


def _require_market(frame: pd.DataFrame) -> None:
    if frame_kind(frame) != "market":
        raise DataError(
            "labels and long-horizon features need market data (a close column)",
            source=str(frame.attrs.get("name", "<frame>")), rule="market frame",
        )

