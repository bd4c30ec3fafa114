"""``chaosfm.evaluate(df, models, h)``: the leakage protocol over a long frame in the field's layouts.

The frame API's counterpart of :func:`~chaosfm.evaluate.evaluate`: a Nixtla (``unique_id, ds, y``),
Chronos (``item_id, timestamp, target``) or chaosfm frame in, each model fitted on the rows up to
the cutoff (each series' row at 80% by default, :meth:`~chaosfm.data.TimeFence.resolve`), scored on
the walk-forward windows after it, and the :class:`~chaosfm.evaluate.Results` out: per-window
scores with each window's class, and the summary per class.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from chaosfm._config import ConfigError, did_you_mean
from chaosfm.data import TimeFence
from chaosfm.evaluate._protocol import Protocol, Results, evaluate
from chaosfm.forecasters import FORECASTERS, AbstractForecaster, Forecaster, make_forecaster

ModelSpec = str | Forecaster | AbstractForecaster
"""A registry name (``"garch"``), a :class:`~chaosfm.Forecaster`, or any forecaster object."""


def evaluate_frame(
    df: pd.DataFrame,
    models: Sequence[ModelSpec] | Mapping[str, ModelSpec],
    h: int = 5,
    *,
    cutoff: Any = None,
    embargo: int = 5,
    every: int | None = None,
    num_samples: int = 100,
    context_length: int | None = 512,
    max_windows: int | None = None,
    score_in_sample: bool = False,
    seed: int = 0,
    values: str = "prices",
) -> Results:
    """Fit ``models`` up to the cutoff and score every window of ``df`` under the leakage protocol.

    Args:
        df: a long frame: Nixtla (``unique_id, ds, y``), Chronos (``item_id, timestamp, target``)
            or chaosfm (``asset, timestamp, open..volume`` / ``close`` / ``x0..xk``); validated.
        models: registry names, :class:`~chaosfm.Forecaster` objects or forecasters (a mapping
            gives them display names). A forecaster that is already trained (a run folder's,
            ``Forecaster.load``) is scored as it is; every other one is fitted on the rows up to
            the cutoff.
        h: rows forecast from each origin (the horizon).
        cutoff: the last timestamp fitting may see: one for every series, ``{id: timestamp}``,
            or None for each series' row at 80% of its rows.
        embargo: rows after the cutoff that are neither training data nor fresh.
        every: rows between origins (None: ``h``).
        num_samples: sample paths per forecast.
        context_length: rows of history given to each forecast (None: all of it).
        max_windows: at most this many origins per series, evenly spaced (None: all).
        score_in_sample: also score the windows the models were fitted on.
        seed: every forecast's key derives from it.
        values: how a univariate ``y``/``target`` column is read: ``"prices"`` or ``"levels"``
            (:class:`~chaosfm.Forecaster`).

    Returns:
        :class:`~chaosfm.evaluate.Results`: ``scores`` (one row per model and window, with its
        ``window_class``) and ``summary()`` per class.

    Raises:
        ConfigError: an unknown model name (with a suggestion) or a bad setting.
        DataError: the frame breaks a rule (naming its own column, the row and the rule).
    """
    reader = Forecaster(make_forecaster("random_walk"), values=values)
    frame = reader.frame(df)
    fence = TimeFence.resolve(frame, cutoff, embargo=embargo)
    train = fence.train(frame)
    named = dict(models) if isinstance(models, Mapping) else {_name(m): m for m in models}
    if not named:
        raise ConfigError("models: name at least one model (e.g. ['random_walk', 'garch'])")
    fitted = {}
    for name, spec in named.items():
        forecaster = _forecaster(spec)
        fitted[name] = forecaster if forecaster.trained_through is not None else forecaster.fit(train)
    protocol = Protocol(horizon=h, embargo=embargo, step=every, num_samples=num_samples,
                        context_length=context_length, max_windows=max_windows,
                        score_in_sample=score_in_sample, seed=seed)
    return evaluate(fitted, frame, protocol, cutoff=fence.cutoff)


def _name(spec: ModelSpec) -> str:
    if isinstance(spec, str):
        return spec
    return spec.name


def _forecaster(spec: ModelSpec) -> AbstractForecaster:
    if isinstance(spec, Forecaster):
        return spec.forecaster
    if isinstance(spec, AbstractForecaster):
        return spec
    if isinstance(spec, str):
        if spec not in FORECASTERS:
            raise ConfigError(f"unknown model {spec!r}{did_you_mean(spec, FORECASTERS)}; known: {', '.join(FORECASTERS)}")
        return make_forecaster(spec)
    raise ConfigError(f"a model is a name, a chaosfm.Forecaster or a forecaster; got {type(spec).__name__}")
