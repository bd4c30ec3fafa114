"""The candle features a candle tokenizer reads, as arrays per asset, and their warm-up rows.

Split from ``_candle.py`` (the tokenizer family): what the tokenizers encode, computed fast.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from chaosfm.data import MARKET_COLUMNS, DataError, candle_features, symlog

_SHAPE_FEATURES = ("log_return", "symlog_return", "body", "upper_wick", "lower_wick", "range")


def feature_arrays(
    frame: pd.DataFrame, names: Sequence[str], slices: Sequence[tuple[str, np.ndarray]]
) -> list[np.ndarray]:
    """``candle_features(frame)[names]`` as one ``(T, F)`` array per asset of ``slices``.

    Features that need no rolling window are computed here with numpy, several times faster than
    the pandas path (the test checks they agree with :func:`chaosfm.data.candle_features`); any
    other feature falls back to ``candle_features``.
    """
    if not set(names) <= set(_SHAPE_FEATURES):
        light = frame[["asset", "timestamp", *MARKET_COLUMNS]].reset_index(drop=True)
        light.attrs = {}  # candle_features copies attrs at every step; a combined frame's are big
        features = candle_features(light)[list(names)].to_numpy(dtype=np.float64)
        return [features[rows] for _, rows in slices]
    o, h, lo, c = (frame[k].to_numpy(dtype=np.float64) for k in ("open", "high", "low", "close"))
    out = []
    for _, rows in slices:
        close = c[rows]
        previous = np.empty_like(close)
        previous[0] = np.nan
        previous[1:] = close[:-1]
        log_return = np.log(close / previous)
        top = np.maximum(o[rows], close)
        bottom = np.minimum(o[rows], close)
        columns = {
            "log_return": log_return,
            "symlog_return": symlog(100.0 * log_return),
            "body": (close - o[rows]) / previous,
            "upper_wick": (h[rows] - top) / previous,
            "lower_wick": (bottom - lo[rows]) / previous,
            "range": (h[rows] - lo[rows]) / previous,
        }
        out.append(np.stack([columns[name] for name in names], axis=1))
    return out


def _warmup_length(values: np.ndarray, what: str, asset: str) -> int:
    """Leading rows with an undefined feature; NaN anywhere after them is an error."""
    bad = ~np.isfinite(values).all(axis=1)
    if not bad.any():
        return 0
    warm = int(np.argmin(bad)) if not bad.all() else len(bad)
    if bad[warm:].any():
        row = warm + int(np.flatnonzero(bad[warm:])[0])
        raise DataError(
            f"{what}: asset {asset!r} has an undefined feature at its row {row}, after warm-up",
            row=row, rule="finite features",
        )
    return warm
