"""The last part of each asset's fit rows, held out: for a wrapper that fits copies on the rows
before it and forecasts windows in it (conformal calibration, ensemble weights).

Dimension letters: H horizon steps, C target columns.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from chaosfm.data import split_assets


def holdout_start(rows: int, fraction: float) -> int:
    """The first held-out row of an asset with ``rows`` rows: the last ``fraction`` are held out."""
    return rows - int(round(fraction * rows))


def rows_before_holdout(frame: pd.DataFrame, fraction: float, min_context: int, who: str, purpose: str) -> pd.DataFrame:
    """Every asset's rows before its held-out part, as one frame (``frame.attrs`` kept).

    Raises:
        ValueError: an asset keeps fewer than ``min_context`` rows (names the asset, ``who`` and ``purpose``).
    """
    kept = []
    for asset, part in split_assets(frame).items():
        keep = holdout_start(len(part), fraction)
        if keep < min_context:
            raise ValueError(
                f"{who}.fit: asset {asset!r} has {len(part)} rows; keeping {fraction:g} of them {purpose} "
                f"leaves {keep}, fewer than min_context={min_context}"
            )
        kept.append(part.iloc[:keep])
    out = pd.concat(kept, ignore_index=True)
    out.attrs = dict(frame.attrs)
    return out


def holdout_windows(
    frame: pd.DataFrame, columns: list[str], fraction: float, min_context: int, horizon: int,
    max_windows: int, context_length: int | None, step: int = 1,
) -> list[tuple[pd.DataFrame, np.ndarray]]:
    """``(context, observed (H, C))`` of the held-out origins of every asset, at most
    ``max_windows`` per asset, evenly spaced over origins ``step`` rows apart.

    ``context_length`` None hands each window the asset's whole history before its origin.
    """
    windows = []
    for part in split_assets(frame).values():
        first = max(holdout_start(len(part), fraction), min_context)
        origins = np.arange(first, len(part) - horizon + 1, step)
        if len(origins) > max_windows:
            origins = origins[np.unique(np.linspace(0, len(origins) - 1, max_windows).round().astype(int))]
        values = part[columns].to_numpy(np.float64)
        for origin in origins:
            start = 0 if context_length is None else max(0, origin - context_length)
            windows.append((part.iloc[start:origin], values[origin : origin + horizon]))
    return windows
