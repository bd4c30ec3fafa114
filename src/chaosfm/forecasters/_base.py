"""The Forecaster protocol every forecasting engine implements, and the Forecast it returns.

Dimension letters: S samples, H horizon steps, C channels (target columns), Q quantile levels.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from chaosfm.data import TrainedThrough, target_columns


class Forecast:
    """Sample paths of a forecast, ``samples`` of shape ``(S, H, C)``.

    A 2-D ``(S, H)`` input is read as one channel. Quantiles and means are taken over samples.

    Attributes:
        samples: float64 array ``(S, H, C)`` in the original units of the target columns.
        columns: the C target column names.
        asset: the asset forecast, when known.
        timestamps: the H target timestamps, when known (the evaluator sets them).
        point: the forecaster's own point forecast ``(H, C)``, when it has one that is not a
            statistic of the samples (context parroting's best match); point scores (MASE,
            sMAPE, MAE, VPT, direction) use :meth:`point_forecast`, the sample median otherwise.
    """

    def __init__(
        self,
        samples: Any,
        columns: Sequence[str] | None = None,
        *,
        asset: str | None = None,
        timestamps: Sequence[Any] | None = None,
        point: Any = None,
    ):
        array = np.asarray(samples, dtype=np.float64)
        if array.ndim == 2:
            array = array[:, :, None]
        if array.ndim != 3 or array.shape[0] < 1 or array.shape[1] < 1:
            raise ValueError(
                f"Forecast samples must have shape (samples, horizon[, channels]) with at least one "
                f"sample and one step; got shape {array.shape}"
            )
        if columns is None:
            columns = [f"x{i}" for i in range(array.shape[2])]
        if len(columns) != array.shape[2]:
            raise ValueError(f"{len(columns)} column names for {array.shape[2]} channels")
        if timestamps is not None and len(timestamps) != array.shape[1]:
            raise ValueError(f"{len(timestamps)} timestamps for a horizon of {array.shape[1]}")
        if point is not None:
            point = np.asarray(point, dtype=np.float64).reshape(array.shape[1:])
        self.samples = array
        self.point = point
        self.columns = list(columns)
        self.asset = asset
        self.timestamps = None if timestamps is None else list(timestamps)

    @property
    def num_samples(self) -> int:
        return self.samples.shape[0]

    @property
    def horizon(self) -> int:
        return self.samples.shape[1]

    def quantile(self, q: float | Sequence[float]) -> np.ndarray:
        """Quantile(s) over samples: ``(H, C)`` for a scalar ``q``, ``(Q, H, C)`` for a sequence."""
        levels = np.asarray(q, dtype=np.float64)
        if np.any((levels < 0) | (levels > 1)):
            raise ValueError(f"quantile levels must lie in [0, 1], got {q}")
        return np.quantile(self.samples, levels, axis=0)

    def mean(self) -> np.ndarray:
        """Sample mean, ``(H, C)``."""
        return self.samples.mean(axis=0)

    def median(self) -> np.ndarray:
        """Sample median, ``(H, C)``."""
        return np.median(self.samples, axis=0)

    def point_forecast(self) -> np.ndarray:
        """The point forecast, ``(H, C)``: the forecaster's own if it gave one, else the median."""
        return self.median() if self.point is None else self.point

    def to_frame(self, quantiles: Sequence[float] = (0.1, 0.5, 0.9)) -> pd.DataFrame:
        """Long frame: ``asset, step, timestamp, column, mean, q0.1, ...`` (one row per step and column)."""
        q = self.quantile(list(quantiles))
        rows = []
        for h in range(self.horizon):
            for c, column in enumerate(self.columns):
                row = {
                    "asset": self.asset,
                    "step": h + 1,
                    "timestamp": None if self.timestamps is None else self.timestamps[h],
                    "column": column,
                    "mean": float(self.samples[:, h, c].mean()),
                }
                row.update({f"q{level:g}": float(q[i, h, c]) for i, level in enumerate(quantiles)})
                rows.append(row)
        return pd.DataFrame(rows)

    def __repr__(self) -> str:
        return (
            f"Forecast(samples={self.num_samples}, horizon={self.horizon}, "
            f"columns={self.columns}, asset={self.asset!r})"
        )


class AbstractForecaster(abc.ABC):
    """What the evaluator speaks to: ``fit(frame) -> self`` and ``forecast(...) -> Forecast``.

    Concrete forecasters set ``name`` and, in ``fit``, ``trained_through`` (the last timestamp of
    every asset the fit saw, from :func:`chaosfm.data.trained_through`). A forecaster built on
    artifacts fitted elsewhere (a tokenizer, a pretrained encoder) returns their records from
    :meth:`upstream_trained_through`, so the evaluator can tell within-pretrain windows from fresh.
    """

    name: str = "forecaster"
    trained_through: TrainedThrough | None = None
    reads_all_history: bool = False
    """A stateful forecaster that continues from its fitted state through every row after its
    ``trained_through`` (the online predictor) sets this: the evaluator then hands it each
    origin's whole history instead of the last ``context_length`` rows, so its forecast does not
    depend on where a context happens to start."""

    @abc.abstractmethod
    def fit(self, frame: pd.DataFrame) -> "AbstractForecaster":
        """Fit on a validated frame (every row at or before the cutoff) and return self."""

    @abc.abstractmethod
    def forecast(
        self, context: pd.DataFrame, horizon: int, num_samples: int, *, key: Any = None
    ) -> Forecast:
        """Sample ``num_samples`` paths of ``horizon`` steps after the last row of ``context``.

        Args:
            context: one asset's rows up to the forecast origin (never after it).
            horizon: steps to forecast.
            num_samples: sample paths to draw.
            key: a JAX PRNG key; stochastic forecasters raise without one.
        """

    def upstream_trained_through(self) -> list[TrainedThrough]:
        """``trained_through`` of every artifact this forecaster depends on but did not fit."""
        return []

    def fitted_summary(self) -> dict[str, Any]:
        """What ``fit`` chose that a reader of the results should see (JSON-ready; empty by
        default): an ensemble's weights, for instance. The evaluate job writes it to
        ``metrics.json`` under ``datasets.NAME.fitted.MODEL``."""
        return {}

    def target_columns(self, frame: pd.DataFrame) -> list[str]:
        """The columns this forecaster predicts in ``frame``."""
        return target_columns(frame)


def require_key(key: Any, who: str) -> Any:
    """Stochastic code without a key raises (STYLE.md: no hidden global randomness)."""
    if key is None:
        raise ValueError(f"{who} is stochastic: pass key=jax.random.key(seed)")
    return key
