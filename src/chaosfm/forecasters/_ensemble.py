"""Forecast combination: a linear pool of registered forecasters' sample paths, its weights fitted
on the rows before the cutoff by minimising the pool's CRPS.

The pool of members ``F_1..F_M`` with weights ``w`` on the simplex is the mixture ``sum_i w_i F_i``
(the linear opinion pool, Stone 1961; for density forecasts Hall & Mitchell 2007). Its CRPS in the
kernel form (Gneiting & Raftery 2007, eq. 21), ``E|X - y| - 0.5 E|X - X'|``, expands over the
members: ``CRPS(pool, y) = sum_i w_i A_i - 0.5 sum_ij w_i w_j B_ij`` with ``A_i = E|X_i - y|`` and
``B_ij = E|X_i - X_j'|``. Both are estimated exactly from samples, ``B_ii`` over the distinct pairs
of member ``i``'s samples (the fair estimator the evaluator scores with), so the objective is a
quadratic in ``w``; with the population terms it is convex on the simplex (``|x - y|`` is a
conditionally negative definite kernel), and SciPy's SLSQP solves it from equal weights.

Dimension letters: M members, S samples, H horizon steps, C channels (target columns), N validation
windows.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any, final

import jax
import numpy as np
import pandas as pd
from scipy import optimize

from chaosfm._config import require_int
from chaosfm._progress import progress
from chaosfm._random import numpy_rng
from chaosfm.forecasters._base import AbstractForecaster, Forecast, require_key
from chaosfm.forecasters._calibrate import _difficulties
from chaosfm.forecasters._holdout import holdout_windows, rows_before_holdout
from chaosfm.forecasters._registry import make_forecaster

WEIGHTINGS = ("equal", "fitted")
VOLATILITY_WINDOW = 20
"""Increments of a validation context whose standard deviation (times ``sqrt(h)``) scales its CRPS."""


def _pair_sums(samples: np.ndarray) -> np.ndarray:
    """``sum_{a<b} |x_a - x_b|`` over the sample axis of ``(S, ...)``, in ``O(S log S)``."""
    ordered = np.sort(samples, axis=0)
    count = ordered.shape[0]
    rank = (2 * np.arange(count) - count + 1).astype(np.float64).reshape((count,) + (1,) * (ordered.ndim - 1))
    return (rank * ordered).sum(axis=0)


def crps_terms(
    samples: Sequence[np.ndarray], observed: np.ndarray, *, fair: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """The terms of the pooled CRPS of one window: ``A`` ``(M, H, C)`` and ``B`` ``(M, M, H, C)``.

    Args:
        samples: M arrays ``(S_i, H, C)``, each member's samples (at least two each when ``fair``).
        observed: ``(H, C)`` the observed values.
        fair: ``B_ii`` over the ``S_i (S_i - 1)`` distinct pairs (unbiased); else over all
            ``S_i^2`` pairs (the CRPS of the pool of empirical distributions).

    Returns:
        ``A_i = mean|X_i - y|`` and ``B_ij = mean|X_i - X_j'|``, in the units of ``observed``.
    """
    a = np.stack([np.abs(x - observed).mean(axis=0) for x in samples])
    within = [_pair_sums(x) for x in samples]
    b = np.empty((len(samples),) * 2 + a.shape[1:])
    for i, x in enumerate(samples):
        b[i, i] = 2.0 * within[i] / (len(x) * (len(x) - 1) if fair else len(x) ** 2)
        for j in range(i):
            y = samples[j]
            # Pairs across the two members: the pairs of the union minus those within each.
            cross = _pair_sums(np.concatenate([x, y])) - within[i] - within[j]
            b[i, j] = b[j, i] = cross / (len(x) * len(y))
    return a, b


def pooled_crps(weights: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """``sum_i w_i A_i - 0.5 sum_ij w_i w_j B_ij``, for ``A`` ``(M,)`` and ``B`` ``(M, M)`` averages."""
    return float(weights @ a - 0.5 * weights @ b @ weights)


def simplex_weights(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The weights ``(M,)`` on the simplex that minimise :func:`pooled_crps` (SLSQP from equal weights)."""
    count = len(a)
    symmetric = 0.5 * (b + b.T)
    result = optimize.minimize(
        pooled_crps, np.full(count, 1.0 / count), args=(a, symmetric), jac=lambda w, a, b: a - b @ w,
        method="SLSQP", bounds=[(0.0, 1.0)] * count,
        constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones_like(w)}],
        options={"ftol": 1e-12, "maxiter": 500},
    )
    weights = np.clip(result.x, 0.0, 1.0)
    return weights / weights.sum()


@final
class Ensemble(AbstractForecaster):
    """A linear pool of registered forecasters: each path is drawn from one member, chosen at random
    by the weights (Stone 1961; Hall & Mitchell 2007).

    With ``weights="fitted"``, ``fit`` fits copies of the members on the first
    ``1 - validation_fraction`` of each asset's rows, then the members themselves on every row. On
    the first ``forecast`` of a horizon the copies forecast validation windows in the remaining
    rows (all at or before the cutoff), and the weights minimise the mean over windows, steps and
    columns of the pool's CRPS (see the module docstring). Each window's ``A`` and ``B`` are divided
    by a scale known at its origin, the standard deviation of the context's last 20 increments
    times ``sqrt(h)``, so assets and steps of different price levels weigh alike.

    Args:
        members: registry names of the pooled forecasters, at least two, no repeats.
        member_options: name -> constructor options of that member.
        weights: ``"fitted"`` or ``"equal"``.
        validation_fraction: share of each asset's rows before the cutoff whose windows fit the weights.
        max_validation_windows: at most this many validation windows per asset, evenly spaced.
        validation_samples: sample paths per member and validation window.
        validation_step: rows between validation origins (default: every row, then thinned).
        context_length: rows of history a member gets (the whole history if it reads it all).
        min_context: rows of history a validation window needs.
        seed: seed of the validation forecasts' keys.

    Attributes:
        weights_: horizon -> ``(M,)`` the weights of that horizon, once computed.
    """

    name = "ensemble"
    kinds = ("market", "trajectory")

    def __init__(
        self,
        members: Sequence[str] = ("garch", "har_rv", "market_model"),
        *,
        member_options: Mapping[str, Mapping[str, Any]] | None = None,
        weights: str = "fitted",
        validation_fraction: float = 0.2,
        max_validation_windows: int = 200,
        validation_samples: int = 100,
        validation_step: int | None = None,
        context_length: int = 512,
        min_context: int = 64,
        seed: int = 0,
    ) -> None:
        names = [str(m) for m in ([members] if isinstance(members, str) else members)]
        if len(names) < 2:
            raise ValueError(f"ensemble members must name at least two forecasters, got {names}")
        if len(set(names)) < len(names):
            raise ValueError(f"ensemble members must not repeat, got {names}")
        options = dict(member_options or {})
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise ValueError(f"member_options names {unknown}, which are not members ({names})")
        if weights not in WEIGHTINGS:
            raise ValueError(f"weights must be one of {', '.join(WEIGHTINGS)}, got {weights!r}")
        if not 0 < validation_fraction < 1:
            raise ValueError(f"validation_fraction must lie in (0, 1), got {validation_fraction}")
        self.member_names = names
        self.members = [make_forecaster(n, **options.get(n, {})) for n in names]
        self.kinds = tuple(k for k in ("market", "trajectory")
                           if all(k in getattr(m, "kinds", ("market", "trajectory")) for m in self.members))
        self.reads_all_history = any(m.reads_all_history for m in self.members)
        self.weighting = weights
        self.validation_fraction = float(validation_fraction)
        self.max_validation_windows = require_int(max_validation_windows, "max_validation_windows", 1)
        self.validation_samples = require_int(validation_samples, "validation_samples", 2)
        self.validation_step = None if validation_step is None else require_int(validation_step, "validation_step", 1)
        self.context_length = require_int(context_length, "context_length", 1)
        self.min_context = require_int(min_context, "min_context", 2)
        self.seed = int(seed)
        self.weights_: dict[int, np.ndarray] = {}
        self._validation: list[AbstractForecaster] = []
        self._train: pd.DataFrame | None = None

    def fit(self, frame: pd.DataFrame) -> "Ensemble":
        """Fit the validation copies (``weights="fitted"``), then every member on every row.

        The weights wait for the first ``forecast`` (they need the horizon).
        """
        self.weights_ = {}
        self._validation = []
        if self.weighting == "fitted":
            head_frame = rows_before_holdout(frame, self.validation_fraction, self.min_context, self.name,
                                             "to fit the weights")
            self._validation = [copy.deepcopy(m).fit(head_frame) for m in self.members]
        for member in self.members:
            member.fit(frame)
        records = [m.trained_through for m in self.members]
        if any(r != records[0] for r in records):
            raise ValueError(f"{self.name}: the members' trained_through differ after fitting on one frame: "
                             f"{dict(zip(self.member_names, records))}")
        self.trained_through = records[0]
        self._train = frame
        return self

    def upstream_trained_through(self) -> list[Any]:
        return [record for m in self.members for record in m.upstream_trained_through()]

    def target_columns(self, frame: pd.DataFrame) -> list[str]:
        return self.members[0].target_columns(frame)

    def weights(self, horizon: int) -> dict[str, float]:
        """Member name -> weight for forecasts of ``horizon`` steps (fitted on first use)."""
        return dict(zip(self.member_names, self._weights(horizon).tolist()))

    def fitted_summary(self) -> dict[str, Any]:
        """The weights of every horizon forecast so far: ``{"weights": {"H": {member: weight}}}``."""
        return {"weights": {str(h): dict(zip(self.member_names, map(float, w))) for h, w in self.weights_.items()}}

    def _weights(self, horizon: int) -> np.ndarray:
        if self._train is None:
            raise RuntimeError(f"{self.name}.forecast was called before fit")
        if horizon not in self.weights_:
            if self.weighting == "equal":
                self.weights_[horizon] = np.full(len(self.members), 1.0 / len(self.members))
            else:
                a, b = self._validation_terms(horizon)
                self.weights_[horizon] = simplex_weights(a, b)
        return self.weights_[horizon]

    def _member_context(self, member: AbstractForecaster, context: pd.DataFrame) -> pd.DataFrame:
        """The ensemble reads all history when one member does; the others get the last rows."""
        return context if member.reads_all_history else context.iloc[-self.context_length :]

    def _validation_terms(self, horizon: int) -> tuple[np.ndarray, np.ndarray]:
        """``A`` ``(M,)`` and ``B`` ``(M, M)``: the scaled terms averaged over windows, steps, columns."""
        columns = self.target_columns(self._train)
        windows = holdout_windows(self._train, columns, self.validation_fraction, self.min_context, horizon,
                                  self.max_validation_windows, None, self.validation_step or 1)
        root = jax.random.key(self.seed)
        a_sum, b_sum, count = 0.0, 0.0, 0
        for index, (history, truth) in enumerate(progress(windows, f"weighting {self.name}")):
            key = jax.random.fold_in(root, index)
            samples = [
                m.forecast(self._member_context(m, history), horizon, self.validation_samples,
                           key=jax.random.fold_in(key, i)).samples
                for i, m in enumerate(self._validation)
            ]
            scale = _difficulties(samples[0], history[columns].to_numpy(np.float64), VOLATILITY_WINDOW)[1]  # (H, C)
            usable = np.isfinite(scale) & (scale > 0)
            if not usable.any():
                continue
            a, b = crps_terms(samples, truth)
            a_sum = a_sum + (a[:, usable] / scale[usable]).sum(axis=-1)
            b_sum = b_sum + (b[:, :, usable] / scale[usable]).sum(axis=-1)
            count += int(usable.sum())
        if count == 0:
            raise ValueError(
                f"{self.name}: no validation window of {horizon} steps with a nonzero scale in the last "
                f"{self.validation_fraction:g} of the rows before the cutoff (raise validation_fraction, or give "
                f"more rows)"
            )
        return a_sum / count, b_sum / count

    def forecast(
        self, context: pd.DataFrame, horizon: int, num_samples: int, *, key: Any = None
    ) -> Forecast:
        """``num_samples`` paths ``(S, H, C)``, each from a member drawn independently by the weights.

        Member ``i`` forecasts its count of paths with ``fold_in(key, i)``; the rows are shuffled so
        their order says nothing about the member. Independent draws (no stratification) keep the
        pool an i.i.d. sample of the mixture, which the fair CRPS estimator assumes.
        """
        key = require_key(key, f"{self.name}.forecast")
        require_int(num_samples, "num_samples", 1)
        weights = self._weights(horizon)
        rng = numpy_rng(key)
        counts = rng.multinomial(num_samples, weights)
        parts, first = [], None
        for index, (name, member, count) in enumerate(zip(self.member_names, self.members, counts)):
            if count == 0:
                continue
            forecast = member.forecast(self._member_context(member, context), horizon, int(count),
                                       key=jax.random.fold_in(key, index))
            if first is None:
                first = (name, forecast)
            elif forecast.columns != first[1].columns:
                raise ValueError(f"{self.name}: member {name!r} forecasts columns {forecast.columns}, "
                                 f"member {first[0]!r} forecasts {first[1].columns}")
            parts.append(forecast.samples)
        samples = np.concatenate(parts)[rng.permutation(num_samples)]
        reference = first[1]
        return Forecast(samples, reference.columns, asset=reference.asset, timestamps=reference.timestamps)
