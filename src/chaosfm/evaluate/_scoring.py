"""Window scores: one shared signature, ``score(window) -> float``, used by ``evaluate``.

Each entry adapts a stateless metric from ``_metrics`` to a scored window: the forecast, what was
observed, and the history at or before the window's origin (never after it), so a scale such as
MASE's denominator or the attractor's spread for VPT comes only from data the forecaster could see.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from chaosfm.evaluate import _metrics as m
from chaosfm.forecasters import Forecast


@dataclass(frozen=True)
class Window:
    """One scored forecast. Shapes: observed ``(H, C)``, history ``(T, C)``."""

    forecast: Forecast
    observed: np.ndarray
    history: np.ndarray
    season: int = 1
    quantile_levels: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    lyapunov_exponent: float | None = None
    dt: float = 1.0
    vpt_threshold: float = 0.4


Score = Callable[[Window], float]


def _crps(w: Window) -> float:
    return float(np.mean(m.crps(w.forecast.samples, w.observed)))


def _wql(w: Window) -> float:
    levels = list(w.quantile_levels)
    return float(m.wql(w.forecast.quantile(levels), w.observed, levels))


def _mase(w: Window) -> float:
    try:
        return float(m.mase(w.forecast.point_forecast(), w.observed, w.history, season=w.season))
    except ValueError:
        # A history too short, or constant, has no scale: no score rather than an invented one.
        return float("nan")


def _coverage_80(w: Window) -> float:
    return float(m.coverage(w.forecast.samples, w.observed, level=0.8))


def _coverage_50(w: Window) -> float:
    return float(m.coverage(w.forecast.samples, w.observed, level=0.5))


def _smape(w: Window) -> float:
    return float(m.smape(w.forecast.point_forecast(), w.observed))


def _rmse(w: Window) -> float:
    return float(m.rmse(w.forecast.point_forecast(), w.observed))


def _mae(w: Window) -> float:
    return float(m.mae(w.forecast.point_forecast(), w.observed))


def _directional(w: Window) -> float:
    last = np.broadcast_to(w.history[-1], w.observed.shape)
    return float(m.directional_accuracy(w.forecast.point_forecast(), w.observed, last))


def _vpt(w: Window, channels: slice = slice(None)) -> float:
    """VPT over ``channels`` (default all: the joint VPT), each normalised by its spread in the history."""
    if w.lyapunov_exponent is None:
        return float("nan")
    scale = w.history[:, channels].std(axis=0)
    if not (scale > 0).all():
        return float("nan")  # a constant history has no spread to measure an error against
    return float(
        m.valid_prediction_time(
            w.forecast.point_forecast()[:, channels], w.observed[:, channels], w.lyapunov_exponent,
            w.vpt_threshold, dt=w.dt, scale=scale,
        )
    )


CHANNEL_VPT = "vpt_"
"""``vpt_<column>``: the valid prediction time of one channel alone (``vpt_x0``, ``vpt_x1``, ...)."""


def channel_scores(columns: Sequence[str]) -> dict[str, Score]:
    """``vpt_<column>`` for each target column: its own error over its own spread, so one observed
    coordinate or one sensor among several gets its own VPT."""
    return {f"{CHANNEL_VPT}{c}": partial(_vpt, channels=slice(i, i + 1)) for i, c in enumerate(columns)}


def _crps_pct(w: Window) -> float:
    """CRPS of the first channel in percent of its last value: comparable across price levels and assets."""
    last = float(w.history[-1, 0])
    return float(100.0 * np.mean(m.crps(w.forecast.samples, w.observed)) / last)


def _long_short_return(w: Window) -> float:
    """Hold ``sign(forecast median at the horizon - last value)`` for the window and earn that times
    the realized log return. With ``step = horizon`` windows do not overlap, so their Sharpe ratio
    is the rule's."""
    last = float(w.history[-1, 0])
    position = np.sign(float(w.forecast.median()[-1, 0]) - last)
    return float(position * np.log(float(w.observed[-1, 0]) / last))


SCORES: dict[str, Score] = {
    "crps": _crps,
    "wql": _wql,
    "mase": _mase,
    "coverage_80": _coverage_80,
    "coverage_50": _coverage_50,
    "smape": _smape,
    "rmse": _rmse,
    "mae": _mae,
    "directional_accuracy": _directional,
    "valid_prediction_time": _vpt,
    "crps_pct": _crps_pct,
    "long_short_return": _long_short_return,
}

HIGHER_IS_BETTER = {"directional_accuracy", "valid_prediction_time", "long_short_return"}
"""Every other score is a loss, except ``coverage_80`` and ``coverage_50`` whose targets are 0.8 and 0.5 (and ``vpt_<column>``,
see :func:`higher_is_better`)."""


COVERAGE_TARGETS = {"coverage_80": 0.8, "coverage_50": 0.5}
"""Coverage scores and their nominal level: the best value is the closest to it."""


def higher_is_better(name: str) -> bool:
    """Whether a larger value of score ``name`` is better."""
    return name in HIGHER_IS_BETTER or name.startswith(CHANNEL_VPT)


def is_vpt(name: str) -> bool:
    """Whether score ``name`` is a valid prediction time (it needs the exponent and ``dt``)."""
    return name == "valid_prediction_time" or name.startswith(CHANNEL_VPT)


DEFAULT_SCORES = {
    "market": ("crps", "mase", "coverage_80", "coverage_50", "wql", "smape", "rmse", "mae", "directional_accuracy"),
    "trajectory": ("valid_prediction_time", "smape", "crps", "mase", "coverage_80", "rmse", "mae"),
}


long_short_return = _long_short_return
relative_crps = _crps_pct


def resolve_scores(names: Any, kind: str, columns: Sequence[str] = ()) -> dict[str, Score]:
    """The scores named (or the defaults for the frame kind), with a clear error for a typo.

    With several target ``columns`` the defaults add ``vpt_<column>`` for each right after
    ``valid_prediction_time`` (with one column the joint VPT is that channel's); named scores may
    include any ``vpt_<column>``.
    """
    per_channel = channel_scores(columns)
    known = {**SCORES, **per_channel}
    if names is None:
        chosen: tuple[str, ...] = ()
        for name in DEFAULT_SCORES[kind]:
            chosen += (name, *per_channel) if name == "valid_prediction_time" and len(columns) > 1 else (name,)
    else:
        chosen = tuple(names)
    unknown = [n for n in chosen if n not in known]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; known: {sorted(known)}")
    return {name: known[name] for name in chosen}
