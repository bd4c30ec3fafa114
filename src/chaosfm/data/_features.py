"""Causal features of candles: every feature at time t uses only rows at or before t.

Columns (per asset, row t, prices in units of the previous close ``c[t-1]``):
- ``log_return``      ln(c[t] / c[t-1])
- ``symlog_return``   symlog(100 * log_return): sign(x) ln(1 + |x|) of the percent log return,
                      which keeps the sign and order of returns but compresses fat tails
- ``body``            (c[t] - o[t]) / c[t-1]
- ``upper_wick``      (h[t] - max(o[t], c[t])) / c[t-1]
- ``lower_wick``      (min(o[t], c[t]) - l[t]) / c[t-1]
- ``range``           (h[t] - l[t]) / c[t-1]
- ``realized_vol``    sqrt(mean of log_return^2 over the last ``vol_window`` rows, t included)
- ``volume_z``        z-score of ln(1 + volume[t]) against the last ``volume_window`` rows
                      (t included); 0 where those volumes do not vary (indices that report none)

The first row of each asset has no previous close, so its features are NaN; rolling features are
NaN until their window is full. ``warmup_rows`` says how many leading rows are incomplete.

A close-only frame (no open, high, low; see :func:`chaosfm.data.has_ohlc`) gets the same columns:
the returns and ``realized_vol`` as above, and ``body``, the wicks and ``range`` NaN on every row
(unavailable, not warm-up); ``volume_z`` is NaN on every row of a frame without ``volume``. The
columns never change with the frame, so a caller that reads only returns needs no branch, and a
caller that reads the candle shapes calls :func:`chaosfm.data.require_ohlc` first.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from chaosfm.data._errors import DataError
from chaosfm.data._frame import frame_kind, has_ohlc

FEATURE_COLUMNS = (
    "log_return",
    "symlog_return",
    "body",
    "upper_wick",
    "lower_wick",
    "range",
    "realized_vol",
    "volume_z",
)


def symlog(x: np.ndarray) -> np.ndarray:
    """sign(x) * ln(1 + |x|): identity-like near 0, logarithmic in the tails, odd."""
    return np.sign(x) * np.log1p(np.abs(x))


def warmup_rows(vol_window: int = 20, volume_window: int = 20) -> int:
    """Leading rows of each asset whose features are not all defined."""
    return max(vol_window, volume_window)


def candle_features(
    frame: pd.DataFrame, *, vol_window: int = 20, volume_window: int = 20
) -> pd.DataFrame:
    """Causal features of a validated market frame (see the module docstring).

    Args:
        frame: a validated market frame, one or several assets.
        vol_window: rows in the realized-volatility window.
        volume_window: rows in the volume z-score window.

    Returns:
        ``asset, timestamp`` and the feature columns, one row per input row, same order; on a
        close-only frame the candle-shape columns are NaN throughout (see the module docstring).
    """
    if frame_kind(frame) != "market":
        raise DataError(
            "candle features need market data (close, and for the candle shapes open, high, low)",
            source=str(frame.attrs.get("name", "<frame>")), rule="market frame",
        )
    for name, window in (("vol_window", vol_window), ("volume_window", volume_window)):
        if window < 2:
            raise ValueError(f"{name} must be >= 2, got {window}")
    parts = [
        _one_asset(part, vol_window, volume_window)
        for _, part in frame.groupby("asset", sort=False)
    ]
    out = pd.concat(parts)
    return out.loc[frame.index]


def _one_asset(part: pd.DataFrame, vol_window: int, volume_window: int) -> pd.DataFrame:
    c = part["close"].to_numpy(dtype=np.float64)
    if has_ohlc(part):
        o, h, lo = (part[k].to_numpy(dtype=np.float64) for k in ("open", "high", "low"))
    else:  # close-only: every candle-shape feature is unavailable
        o = h = lo = np.full_like(c, np.nan)
    previous = np.r_[np.nan, c[:-1]]
    log_return = np.log(c / previous)
    out = pd.DataFrame(
        {
            "asset": part["asset"].to_numpy(),
            "timestamp": part["timestamp"].to_numpy(),
            "log_return": log_return,
            "symlog_return": symlog(100.0 * log_return),
            "body": (c - o) / previous,
            "upper_wick": (h - np.maximum(o, c)) / previous,
            "lower_wick": (np.minimum(o, c) - lo) / previous,
            "range": (h - lo) / previous,
        },
        index=part.index,
    )
    squared = pd.Series(log_return**2, index=part.index)
    out["realized_vol"] = np.sqrt(squared.rolling(vol_window, min_periods=vol_window).mean())
    if "volume" not in part.columns:
        out["volume_z"] = np.nan
        return out
    log_volume = pd.Series(np.log1p(part["volume"].to_numpy(dtype=np.float64)), index=part.index)
    rolling = log_volume.rolling(volume_window, min_periods=volume_window)
    mean, std = rolling.mean(), rolling.std(ddof=1)
    z = (log_volume - mean) / std
    # Indices such as the Nikkei report no volume: a constant window has no z-score; call it 0.
    out["volume_z"] = z.where(std > 1e-12, np.where(std.isna(), np.nan, 0.0))
    return out
