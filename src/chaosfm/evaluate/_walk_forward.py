"""Rolling-window walk-forward validation of a forecaster: the backtest behind ``chaosfm tune``.

Fold ``i`` of one asset's rows: the cutoff is the last row of a training window of at most
``max_memory`` rows, the test block is the next ``horizon`` rows (positions from
:func:`walk_forward` with ``train_size=max_memory``). For every fold a *fresh* forecaster (from a
factory) is fitted on the training rows only, then asked for a forecast from the same rows, and
the forecast is scored against the test block. Nothing after the cutoff reaches ``fit`` or
``forecast``: the training frame passes a :class:`TimeFence` check before ``fit``, and the
forecaster's ``trained_through`` is checked against the cutoff after it. Any scale a score needs
(MASE's denominator) comes from the training rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
import pandas as pd

from chaosfm._config import require_int
from chaosfm.data import DataError, TimeFence
from chaosfm.evaluate._scoring import SCORES, Window
from chaosfm.evaluate._splits import walk_forward
from chaosfm.forecasters import AbstractForecaster


class Fold(NamedTuple):
    """One walk-forward fold: ``train`` is every row the model may see, all at or before ``cutoff``."""

    cutoff: Any
    train: pd.DataFrame
    test: pd.DataFrame


class FoldScore(NamedTuple):
    cutoff: Any
    scores: dict[str, float]


class WalkForwardValidator:
    """Walk-forward folds of one asset, and the scores of a forecaster refitted on each.

    Args:
        max_memory: training rows per fold (the rolling window); the first cutoff is row
            ``max_memory - 1``.
        horizon: test rows per fold, the forecast horizon.
        step: rows between consecutive cutoffs (default ``horizon``: disjoint test blocks).
        max_folds: keep at most this many folds, evenly spaced over the series (default: all).
        num_samples: sample paths asked of the forecaster.
        metrics: names in ``chaosfm.evaluate.SCORES`` (``crps``, ``mae``, ``mase`` ...).
        seed: root of the per-fold forecast keys (fold ``i`` uses ``fold_in(key(seed), i)``).
    """

    def __init__(
        self,
        max_memory: int,
        horizon: int,
        step: int | None = None,
        max_folds: int | None = None,
        num_samples: int = 100,
        metrics: Sequence[str] = ("crps",),
        seed: int = 0,
    ):
        self.max_memory = require_int(max_memory, "max_memory", 2)
        self.horizon = require_int(horizon, "horizon", 1)
        self.step = self.horizon if step is None else require_int(step, "step", 1)
        self.max_folds = None if max_folds is None else require_int(max_folds, "max_folds", 1)
        self.num_samples = require_int(num_samples, "num_samples", 1)
        unknown = [m for m in metrics if m not in SCORES]
        if unknown or not metrics:
            raise ValueError(f"unknown metric(s) {unknown or list(metrics)}; known: {sorted(SCORES)}")
        self.metrics = tuple(metrics)
        self.seed = int(seed)

    def split(self, frame: pd.DataFrame) -> Iterator[Fold]:
        """``(cutoff, train, test)`` folds in time order; ``frame`` holds one asset."""
        if frame["asset"].nunique() != 1:
            raise DataError(
                f"walk-forward validation follows one asset; got {frame['asset'].nunique()}",
                rule="one asset",
            )
        part = frame.reset_index(drop=True)
        splits = list(walk_forward(len(part), self.horizon, train_size=self.max_memory, step=self.step))
        if self.max_folds is not None and len(splits) > self.max_folds:
            keep = np.unique(np.linspace(0, len(splits) - 1, self.max_folds).round().astype(int))
            splits = [splits[i] for i in keep]
        for train_idx, test_idx in splits:
            train = part.iloc[train_idx].reset_index(drop=True)
            train.attrs = dict(frame.attrs)
            yield Fold(train["timestamp"].iloc[-1], train, part.iloc[test_idx].reset_index(drop=True))

    def n_folds(self, frame: pd.DataFrame) -> int:
        """How many folds :meth:`split` yields for ``frame``."""
        count = len(range(self.max_memory, len(frame) - self.horizon + 1, self.step))
        return count if self.max_folds is None else min(count, self.max_folds)

    def backtest(
        self, make_forecaster: Callable[[], AbstractForecaster], frame: pd.DataFrame
    ) -> Iterator[FoldScore]:
        """Fit a fresh forecaster on each fold's training rows and score its forecast.

        Args:
            make_forecaster: returns an unfitted forecaster (called once per fold).
            frame: one asset's rows, validated.

        Yields:
            ``FoldScore(cutoff, {metric: value})`` per fold, in time order.

        Raises:
            LeakageError: a forecaster reports ``trained_through`` past its fold's cutoff.
            ValueError: a forecast of the wrong shape or with non-finite samples.
        """
        root = jax.random.key(self.seed)
        for index, fold in enumerate(self.split(frame)):
            fence = TimeFence(fold.cutoff)
            forecaster = make_forecaster()
            fence.check(fold.train, f"{forecaster.name}.fit")
            forecaster.fit(fold.train)
            fence.check_trained_through(forecaster.trained_through, f"{forecaster.name}.fit")
            forecast = forecaster.forecast(
                fold.train, self.horizon, self.num_samples, key=jax.random.fold_in(root, index)
            )
            expected = (self.num_samples, self.horizon, len(forecast.columns))
            if forecast.samples.shape != expected or not np.isfinite(forecast.samples).all():
                raise ValueError(
                    f"forecaster {forecaster.name!r} returned samples of shape {forecast.samples.shape}"
                    f" (expected {expected}, all finite) at the fold with cutoff {fold.cutoff!s}"
                )
            window = Window(
                forecast=forecast,
                observed=fold.test[forecast.columns].to_numpy(np.float64),
                history=fold.train[forecast.columns].to_numpy(np.float64),
            )
            yield FoldScore(fold.cutoff, {name: SCORES[name](window) for name in self.metrics})

    def __repr__(self) -> str:
        return (
            f"WalkForwardValidator(max_memory={self.max_memory}, horizon={self.horizon}, "
            f"step={self.step}, max_folds={self.max_folds}, metrics={list(self.metrics)})"
        )
