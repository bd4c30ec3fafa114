"""Calibrated intervals for any forecaster: split conformal, adaptive and aggregated adaptive
conformal inference, on the sample paths of a :class:`Forecast`.

:class:`ConformalForecaster` wraps a forecaster. ``fit`` fits a copy of it on the first
``1 - calibration_fraction`` of each asset's rows and forecasts every calibration window in the
rest (all rows at or before the cutoff), then fits the wrapped forecaster on every row. Each
window's score per horizon step ``h`` and column ``c`` is the residual scaled by a difficulty
estimate, ``z = (y - median) / sigma``: the model's own spread ``q90 - q10``, or the context's
recent volatility, whichever gives the calibrated quantiles the lower pinball loss on the
calibration windows (a model without spread gets the volatility). This is a normalized conformal predictive system
(Vovk et al. 2017; Lei et al. 2018, section 5.2), one per ``(h, c)``, fitted with ``crepes``.
``forecast`` maps each sample of the wrapped forecast, by its rank ``u`` among the samples of its
step, to the conformal quantile ``median + sigma * Q_z(u)``: every marginal quantile is the
conformal one while the paths keep the wrapped model's ordering (its copula).

``method="aci"`` adds adaptive conformal inference (Gibbs & Candès 2021, eq. 2) on top: for each
quantile level ``tau`` of a grid, step and column, the level actually used moves by
``gamma * (1{y > q} - (1 - tau))`` after each observation, so a run of misses widens the interval
and a run of hits narrows it; the feedback of step ``h`` arrives ``h`` rows after the origin (the
multi-step variant: one ACI per step, each updated when its target is seen). ``method="agaci"``
runs ACI for several ``gamma`` and averages their quantiles with exponential weights on the
pinball loss (Zaffran et al. 2022, AgACI, with exponentially weighted averaging in place of BOA).
The online state is read from the contexts the evaluator hands to ``forecast``: the rows after
an earlier origin are the targets of that origin's forecast, so nothing after the origin is used.

Dimension letters: S samples, H horizon steps, C channels, L quantile levels, G learning rates,
N calibration windows.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from typing import Any, final

import jax
import numpy as np
import pandas as pd

from chaosfm._config import require_int
from chaosfm._progress import progress
from chaosfm.data import trained_through
from chaosfm.forecasters._aci import ACI_LEVELS, AGACI_GAMMAS, ACIState, aci_init, aci_update, aci_weights
from chaosfm.forecasters._base import AbstractForecaster, Forecast, require_key
from chaosfm.forecasters._holdout import holdout_windows, rows_before_holdout

METHODS = ("split", "aci", "agaci")
ACI_GAMMA = 0.05
"""ACI's default step size, chosen on rows before the cutoffs (see ``ConformalForecaster``)."""
SCALES = ("spread", "volatility")
"""The difficulty estimates a score can be scaled by: the forecast's own 10-90% spread, or the
context's recent volatility (the standard deviation of its last ``volatility_window`` increments,
times ``sqrt(h)`` at step ``h``)."""


def _spread(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median and 10-90% spread of ``(S, H, C)`` samples, each ``(H, C)``."""
    q10, median, q90 = np.quantile(samples, [0.1, 0.5, 0.9], axis=0)
    return median, q90 - q10


def _difficulties(samples: np.ndarray, context: np.ndarray, window: int) -> np.ndarray:
    """``(2, H, C)``: each scale of :data:`SCALES` for one forecast (NaN where the context is too short).

    Args:
        samples: ``(S, H, C)`` the wrapped forecast's samples.
        context: ``(T, C)`` the context's target values.
        window: increments the volatility is measured on.
    """
    horizon = samples.shape[1]
    spread = _spread(samples)[1]
    increments = np.diff(context[-(window + 1) :], axis=0)
    volatility = increments.std(axis=0, ddof=1) if len(increments) >= 2 else np.full(context.shape[1], np.nan)
    return np.stack([spread, volatility[None, :] * np.sqrt(np.arange(1, horizon + 1))[:, None]])


@dataclass
class _Pending:
    """A forecast whose targets have not all been seen: its origin and per-step quantiles."""

    origin: Any
    quantiles: np.ndarray  # (G, H, C, L)
    spread: np.ndarray  # (H, C)
    resolved: np.ndarray  # (H,) bool


@dataclass
class _Calibration:
    """The conformal systems of one horizon: one per (step, column), and the scale of each."""

    systems: list[list[Any]]
    scale: np.ndarray  # (H, C) int: the index in SCALES of the difficulty used; -1: unscaled
    n_windows: int
    scores: np.ndarray  # (N, H, C) the calibration scores, for reports
    online: dict[str, ACIState] = field(default_factory=dict)
    pending: dict[str, list[_Pending]] = field(default_factory=dict)


@final
class ConformalForecaster(AbstractForecaster):
    """Any forecaster with conformally calibrated quantiles (split, ACI or AgACI).

    Args:
        base: the forecaster to calibrate: not yet fitted, or fitted on the rows ``fit`` is given
            (then it is not fitted again, and may be scored raw beside the copy); a run's trained
            forecaster is used as
            it is: its calibration windows may then be ones it trained on, and its intervals
            come out too narrow rather than too wide).
        method: ``"split"``, ``"aci"`` or ``"agaci"``.
        calibration_fraction: the share of each asset's rows before the cutoff whose windows
            calibrate; the copy that forecasts them is fitted on the rows before.
        max_calibration_windows: at most this many calibration windows per asset, evenly spaced.
        calibration_samples: sample paths per calibration forecast.
        context_length: rows of history handed to the copy per calibration window.
        min_context: rows of history a calibration window needs.
        gamma: ACI's step size (``method="aci"``). Gibbs & Candès use 0.005; 0.05 is what put the
            realised coverage of 150-window blocks within 0.77-0.83 / 0.47-0.53 most often on the rows
            before each built-in market's cutoff (docs/markets.md, "Choosing ACI's step size").
        agaci_gammas: AgACI's experts' step sizes (``method="agaci"``).
        scale: the difficulty the residuals are scaled by: ``"spread"`` (the forecast's own
            10-90% spread), ``"volatility"`` (the context's recent volatility times ``sqrt(h)``),
            or ``"auto"``: per step and column, the one whose calibrated quantiles score the lower
            pinball loss on the calibration windows (a model without spread, like ``last_value``,
            gets volatility).
        volatility_window: increments of the context the volatility scale is measured on.
        seed: seed of the calibration forecasts' keys.
        refit: fit ``base`` on every row (True), or forecast with the copy fitted before the
            calibration rows (False: the strict split-conformal guarantee, less data).
    """

    def __init__(
        self,
        base: AbstractForecaster,
        *,
        method: str = "split",
        calibration_fraction: float = 0.2,
        max_calibration_windows: int = 300,
        calibration_samples: int = 200,
        context_length: int = 512,
        min_context: int = 64,
        gamma: float = ACI_GAMMA,
        agaci_gammas: tuple[float, ...] | list[float] = AGACI_GAMMAS,
        scale: str = "auto",
        volatility_window: int = 20,
        seed: int = 0,
        refit: bool = True,
    ) -> None:
        if not isinstance(base, AbstractForecaster):
            raise ValueError(f"base must be a forecaster, got {type(base).__name__}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        if not 0 < calibration_fraction < 1:
            raise ValueError(f"calibration_fraction must lie in (0, 1), got {calibration_fraction}")
        if not 0 < gamma < 1:
            raise ValueError(f"gamma must lie in (0, 1), got {gamma}")
        agaci_gammas = tuple(float(g) for g in agaci_gammas)
        if not agaci_gammas or not all(0 < g < 1 for g in agaci_gammas):
            raise ValueError(f"agaci_gammas must be step sizes in (0, 1), got {list(agaci_gammas)}")
        if scale not in ("auto", *SCALES):
            raise ValueError(f"scale must be one of auto, {', '.join(SCALES)}, got {scale!r}")
        self.base = base
        self.method = method
        self.name = f"{base.name}+{method}"
        self.kinds = getattr(base, "kinds", ("market", "trajectory"))
        self.reads_all_history = base.reads_all_history
        self.calibration_fraction = float(calibration_fraction)
        self.max_calibration_windows = require_int(max_calibration_windows, "max_calibration_windows", 1)
        self.calibration_samples = require_int(calibration_samples, "calibration_samples", 10)
        self.context_length = require_int(context_length, "context_length", 1)
        self.min_context = require_int(min_context, "min_context", 2)
        self.gammas = {"split": (), "aci": (float(gamma),), "agaci": agaci_gammas}[method]
        self.scale = scale
        self.volatility_window = require_int(volatility_window, "volatility_window", 2)
        self.seed = int(seed)
        self.refit = bool(refit)
        self._inner: AbstractForecaster | None = None
        self._train: pd.DataFrame | None = None
        self._calibrations: dict[int, _Calibration] = {}

    def fit(self, frame: pd.DataFrame) -> "ConformalForecaster":
        """Fit a copy on the rows before the calibration rows, then ``base`` on every row.

        Calibration itself waits for the first ``forecast`` (it needs the horizon).
        """
        inner_frame = rows_before_holdout(frame, self.calibration_fraction, self.min_context, self.name, "to calibrate")
        self._inner = copy.deepcopy(self.base).fit(inner_frame)
        if not self.refit:
            self.base = self._inner
        elif self.base.trained_through != trained_through(frame):
            # A base already fitted on these very rows (the raw model of the same evaluation) is
            # not fitted a second time.
            self.base.fit(frame)
        self.trained_through = self.base.trained_through
        self._train = frame
        self._calibrations = {}
        return self

    def upstream_trained_through(self) -> list[Any]:
        return self.base.upstream_trained_through()

    def target_columns(self, frame: pd.DataFrame) -> list[str]:
        return self.base.target_columns(frame)

    def calibration(self, horizon: int) -> _Calibration:
        """The conformal systems for ``horizon`` steps, computed on first use."""
        if self._train is None or self._inner is None:
            raise RuntimeError(f"{self.name}.forecast was called before fit")
        if horizon not in self._calibrations:
            self._calibrations[horizon] = self._calibrate(horizon)
        return self._calibrations[horizon]

    def _calibration_windows(self, horizon: int) -> list[tuple[pd.DataFrame, np.ndarray]]:
        return holdout_windows(
            self._train, self.base.target_columns(self._train), self.calibration_fraction, self.min_context,
            horizon, self.max_calibration_windows, None if self.base.reads_all_history else self.context_length,
        )

    def _calibrate(self, horizon: int) -> _Calibration:
        from crepes import ConformalPredictiveSystem

        windows = self._calibration_windows(horizon)
        if len(windows) < 20:
            raise ValueError(
                f"{self.name}: {len(windows)} calibration windows of {horizon} steps in the last "
                f"{self.calibration_fraction:g} of the rows before the cutoff; at least 20 are needed "
                f"(raise calibration_fraction, or give more rows)"
            )
        root = jax.random.key(self.seed)
        columns = self.base.target_columns(self._train)
        medians, difficulties, observed = [], [], []
        for index, (context, truth) in enumerate(progress(windows, f"calibrating {self.name}")):
            forecast = self._inner.forecast(
                context, horizon, self.calibration_samples, key=jax.random.fold_in(root, index)
            )
            medians.append(_spread(forecast.samples)[0])
            difficulties.append(_difficulties(forecast.samples, context[columns].to_numpy(np.float64),
                                              self.volatility_window))
            observed.append(truth)
        median, truth = np.stack(medians), np.stack(observed)  # (N, H, C)
        difficulty = np.stack(difficulties, axis=1)  # (2, N, H, C)
        residual = truth - median
        scale = np.full(median.shape[1:], -1)
        for h, c in np.ndindex(*scale.shape):
            scale[h, c] = self._choose_scale(residual[:, h, c], difficulty[:, :, h, c], median[:, h, c])
        sigma = np.where(scale[None] >= 0, np.take_along_axis(difficulty, np.maximum(scale, 0)[None, None], 0)[0], 1.0)
        systems = [
            [ConformalPredictiveSystem().fit(residual[:, h, c], sigmas=sigma[:, h, c]) for c in range(truth.shape[2])]
            for h in range(horizon)
        ]
        return _Calibration(systems, scale, len(windows), residual / sigma)

    def _choose_scale(self, residual: np.ndarray, difficulty: np.ndarray, median: np.ndarray) -> int:
        """The index in :data:`SCALES` of the scale to use for one (step, column), -1 for none.

        A scale is usable when it is positive on every calibration window (a point model has no
        spread; a constant context no volatility). With ``scale="auto"`` the usable scale whose
        calibrated quantiles have the lower mean pinball loss over the levels 0.05..0.95 on the
        calibration windows is taken (a proper score, about CRPS / 2): both cover there by
        construction, and the loss rewards the one whose width follows the error's size.
        """
        usable = [i for i, name in enumerate(SCALES)
                  if (self.scale in ("auto", name))
                  and np.all(np.isfinite(difficulty[i])) and np.all(difficulty[i] > 1e-12 * np.maximum(1.0, np.abs(median)))]
        if len(usable) < 2:
            return usable[0] if usable else -1
        tau = np.asarray(ACI_LEVELS)
        losses = {}
        for i in usable:
            quantiles = difficulty[i][:, None] * np.quantile(residual / difficulty[i], tau)[None, :]  # (N, L)
            error = residual[:, None] - quantiles
            losses[i] = float(np.mean(np.maximum(tau * error, (tau - 1.0) * error)))
        return min(losses, key=losses.get)

    def _quantiles(self, calibration: _Calibration, median: np.ndarray, spread: np.ndarray,
                   levels: np.ndarray) -> np.ndarray:
        """Conformal quantiles ``(..., H, C, K)`` at ``levels`` ``(..., H, C, K)`` in [0, 1].

        ``spread`` ``(H, C)`` is the forecast's difficulty at the calibration's scale (1 where unscaled).
        """
        out = np.empty(levels.shape)
        for h, row in enumerate(calibration.systems):
            for c, system in enumerate(row):
                sigma = spread[h, c]
                # Levels beyond the calibration set's reach (fewer than 1/level windows) take the
                # most extreme score, not crepes' infinite bound: a sample path must be finite.
                low = median[h, c] + sigma * system.alphas[0]
                high = median[h, c] + sigma * system.alphas[-1]
                flat = np.clip(levels[..., h, c, :].reshape(-1), 0.0, 1.0) * 100.0
                below, above = flat[flat < 50.0], flat[flat >= 50.0]
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message="the no. of calibration examples is too small")
                    values = system.predict(
                        np.array([median[h, c]]), sigmas=np.array([sigma]), lower_percentiles=below,
                        higher_percentiles=above, y_min=low, y_max=high,
                    ).reshape(-1)
                result = np.empty_like(flat)
                result[flat < 50.0] = values[: len(below)]
                result[flat >= 50.0] = values[len(below) :]
                out[..., h, c, :] = result.reshape(levels[..., h, c, :].shape)
        return out

    def forecast(
        self, context: pd.DataFrame, horizon: int, num_samples: int, *, key: Any = None
    ) -> Forecast:
        key = require_key(key, f"{self.name}.forecast")
        calibration = self.calibration(horizon)
        raw = self.base.forecast(context, horizon, num_samples, key=key)
        samples = raw.samples
        median = _spread(samples)[0]
        columns = self.base.target_columns(context)
        difficulty = _difficulties(samples, context[columns].to_numpy(np.float64), self.volatility_window)
        spread = np.take_along_axis(difficulty, np.maximum(calibration.scale, 0)[None], 0)[0]
        spread = np.where(calibration.scale >= 0, spread, 1.0)
        if not np.all(np.isfinite(spread) & (spread > 0)):
            raise ValueError(
                f"{self.name}: the forecast's scale is zero or undefined ({SCALES} per step: "
                f"{calibration.scale.tolist()}); give a context of more than {self.volatility_window} "
                f"varying rows"
            )
        # Each sample's level: its rank among the samples of its step (ties by order).
        ranks = np.argsort(np.argsort(samples, axis=0, kind="stable"), axis=0, kind="stable")
        levels = (ranks + 0.5) / samples.shape[0]  # (S, H, C)
        mapped = self._quantiles(calibration, median, spread, np.moveaxis(levels, 0, -1))  # (H, C, S)
        if self.gammas:
            mapped = mapped + self._online_correction(calibration, context, median, spread, levels)
            mapped = _by_rank(mapped, ranks)
        calibrated = np.moveaxis(mapped, -1, 0)
        return Forecast(calibrated, raw.columns, asset=raw.asset, timestamps=raw.timestamps, point=raw.point)

    def _online_correction(self, calibration: _Calibration, context: pd.DataFrame, median: np.ndarray,
                           spread: np.ndarray, levels: np.ndarray) -> np.ndarray:
        """``(H, C, S)``: the aggregated ACI quantiles minus the split ones, interpolated over each
        sample's level (flat beyond the grid); updates the asset's state with the targets the
        context reveals, and records this forecast's quantiles for later feedback."""
        horizon, channels = median.shape
        asset = str(context["asset"].iloc[-1]) if "asset" in context.columns else "series"
        state = calibration.online.get(asset) or aci_init(self.gammas, horizon, channels)
        pending = calibration.pending.setdefault(asset, [])
        columns = self.base.target_columns(context)
        stamps = context["timestamp"].to_numpy()
        values = context[columns].to_numpy(np.float64)
        for entry in pending:
            after = np.flatnonzero(stamps > entry.origin)
            for h in range(min(horizon, len(after))):
                if not entry.resolved[h]:
                    state = aci_update(state, h, values[after[h]], entry.quantiles[:, h],
                                       entry.spread[h], self.gammas)
                    entry.resolved[h] = True
        pending[:] = [e for e in pending if not e.resolved.all()]
        grid = np.asarray(ACI_LEVELS)
        split = self._quantiles(calibration, median, spread, np.broadcast_to(grid, (horizon, channels, len(grid))))
        experts = self._quantiles(calibration, median, spread, state.levels)  # (G, H, C, L)
        combined = (aci_weights(state) * experts).sum(axis=0)  # (H, C, L)
        pending.append(_Pending(stamps[-1], experts, spread, np.zeros(horizon, bool)))
        calibration.online[asset] = state
        correction = combined - split
        out = np.empty(levels.shape[1:] + levels.shape[:1])  # (H, C, S)
        for h in range(horizon):
            for c in range(channels):
                out[h, c] = np.interp(levels[:, h, c], grid, correction[h, c])
        return out


def _by_rank(values: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """``values`` ``(H, C, S)`` sorted per (step, column) and handed back in the samples' rank
    order, so the mapped samples stay monotone in the wrapped samples."""
    ordered = np.sort(values, axis=-1)
    return np.take_along_axis(ordered, np.moveaxis(ranks, 0, -1), axis=-1)
