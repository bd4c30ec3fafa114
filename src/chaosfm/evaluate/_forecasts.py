"""The forecasts behind the scores: one long table, one row per (model, asset, origin, step, column).

``evaluate(..., keep_forecasts=True)`` fills :attr:`Results.forecasts` with it, so a user can build
a P&L or a metric of their own from exactly what was scored. Values are float32 (about seven
significant digits, far finer than any forecast's error) to keep large runs small; timestamps keep
their type: datetime64 for market data, float64 for a trajectory's numeric time.

Dimension letters: S samples, H horizon steps, C channels (target columns), Q quantile levels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from chaosfm.forecasters import Forecast

ID_COLUMNS = ("asset", "origin", "step", "timestamp", "column", "model", "window_class")
VALUE_COLUMNS = ("observed", "point", "mean", "median")


def quantile_names(levels: Sequence[float]) -> list[str]:
    """Column names of quantile ``levels``, as a quantile forecast frame names them: ``"0.1"``."""
    return [str(float(q)) for q in levels]


class ForecastTable:
    """Collects scored windows, then builds the long table once (one row per step and column).

    Columns: ``asset, origin, step, timestamp, column, model, window_class, observed, point, mean,
    median`` and one per quantile level (``"0.1"``, ..., ``"0.9"``). ``origin`` is the window's
    first target timestamp (as in the scores), ``step`` runs 1..H, ``point`` is the forecast the
    point scores (MAE, sMAPE, MASE, VPT) used: the forecaster's own, else the median.
    """

    def __init__(self, quantile_levels: Sequence[float]):
        self.levels = [float(q) for q in quantile_levels]
        self._labels: dict[str, list[Any]] = {k: [] for k in ("asset", "model", "window_class")}
        self._stamps: list[pd.Series] = []
        self._values: list[np.ndarray] = []
        self._columns: list[str] | None = None

    def add(self, *, model: str, asset: str, window_class: str, forecast: Forecast,
            observed: np.ndarray, timestamps: pd.Series) -> None:
        """One scored window: its forecast, the ``(H, C)`` values observed and the H target timestamps."""
        median = forecast.median()
        quantiles = forecast.quantile(self.levels)
        # The median column and the 0.5 quantile are one number, not two roundings of it.
        quantiles[[q == 0.5 for q in self.levels]] = median
        # (2 + 2 + Q, H, C): every value column of the window, stacked.
        block = np.stack([observed, forecast.point_forecast(), forecast.mean(), median, *quantiles])
        self._values.append(block.reshape(len(block), -1).astype(np.float32))
        self._stamps.append(timestamps.reset_index(drop=True))
        for key, value in (("asset", asset), ("model", model), ("window_class", window_class)):
            self._labels[key].append(value)
        self._columns = list(forecast.columns)

    def frame(self) -> pd.DataFrame:
        """The table, in the order windows were added (empty, with its columns, if none were)."""
        names = [*VALUE_COLUMNS, *quantile_names(self.levels)]
        if not self._values:
            return pd.DataFrame(columns=[*ID_COLUMNS, *names])
        columns = self._columns or []
        n_channels = len(columns)
        horizon = len(self._stamps[0])
        per_window = horizon * n_channels
        stamps = pd.concat(self._stamps, ignore_index=True)
        if not pd.api.types.is_datetime64_any_dtype(stamps):
            stamps = stamps.astype(np.float64)
        timestamp = stamps.repeat(n_channels).reset_index(drop=True)
        out = {
            "asset": np.repeat(np.asarray(self._labels["asset"], dtype=object), per_window),
            "origin": stamps.iloc[::horizon].repeat(per_window).reset_index(drop=True),
            "step": np.tile(np.repeat(np.arange(1, horizon + 1), n_channels), len(self._values)),
            "timestamp": timestamp,
            "column": np.tile(np.asarray(columns, dtype=object), horizon * len(self._values)),
            "model": np.repeat(np.asarray(self._labels["model"], dtype=object), per_window),
            "window_class": np.repeat(np.asarray(self._labels["window_class"], dtype=object), per_window),
        }
        values = np.concatenate(self._values, axis=1)
        out.update({name: values[i] for i, name in enumerate(names)})
        return pd.DataFrame(out)


def reliability(forecasts: pd.DataFrame, window_class: str = "fresh") -> pd.DataFrame:
    """How often the observation fell at or below each forecast quantile, per model.

    A calibrated forecast's frequency at level ``tau`` is ``tau`` (the reliability diagram); the
    differences of consecutive frequencies are the forecast's PIT histogram at the resolution of
    the quantile levels (Gneiting, Balabdaoui & Raftery 2007, section 3.1).

    Args:
        forecasts: a :class:`ForecastTable` frame (``forecasts.parquet``).
        window_class: the windows counted.

    Returns:
        One row per model, one column per quantile level (as a float), plus ``n``: the number of
        (window, step, column) values counted. Empty when no window of the class was scored.
    """
    part = forecasts[forecasts["window_class"] == window_class]
    levels = [c for c in forecasts.columns if _is_level(c)]
    rows = {}
    for model, rows_of_model in part.groupby("model", sort=False):
        observed = rows_of_model["observed"].to_numpy(np.float64)[:, None]
        quantiles = rows_of_model[levels].to_numpy(np.float64)
        frequency = (observed <= quantiles).mean(axis=0)
        rows[model] = {**{float(level): float(f) for level, f in zip(levels, frequency)}, "n": len(observed)}
    return pd.DataFrame.from_dict(rows, orient="index")


def _is_level(name: Any) -> bool:
    try:
        return 0.0 < float(name) < 1.0
    except (TypeError, ValueError):
        return False
