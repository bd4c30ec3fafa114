"""What the closed-loop flow forecasters share: scaling, the validation search, the samples.

The echo state network, NG-RC and the MLP flow map (``_reservoir.py``, ``_mlp_flow.py``) learn a
one-step map ``x_{t+1} = x_t + f(past)`` on trajectories and forecast by iterating it on its own
output (closed loop). Around that they share three things, kept here so they are done one way:

* **Scaling.** Every channel is standardised with the mean and standard deviation of the
  training rows only (:class:`Scaling`); closed-loop states are clipped to a box around the
  training range, so a run that diverges stays finite instead of overflowing.
* **The validation search.** Hyperparameters are chosen on training rows only: the last
  ``validation_fraction`` of each training asset is held out (:func:`plan_validation`), each
  candidate is fitted on the rest, and is scored by the mean valid time of closed-loop forecasts
  from ``validation_windows`` origins in the held-out part (:func:`mean_valid_time`): in Lyapunov
  times when the frame's attrs give ``lyapunov_exponent`` and ``dt``, in steps otherwise. The
  winner is refitted on all training rows. Rows after the cutoff never reach ``fit``.
* **Samples.** The models are deterministic. Sample 0 is the unperturbed run (the point
  forecast); samples ``1..S-1`` start from the last context row plus Gaussian noise whose
  standard deviation is, per channel, the model's one-step residual standard deviation on the
  training rows in normalised units (:func:`perturbed_starts`). The spread is the growth of a
  one-step-sized error under the learned dynamics; it ignores model error, so it is narrow.

Dimension letters: B runs in a batch, T rows, C channels, H horizon steps, S samples.
"""

from __future__ import annotations

import abc
import itertools
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from chaosfm._config import ConfigError, require_int
from chaosfm._random import numpy_rng
from chaosfm.forecasters._base import AbstractForecaster, Forecast, require_key
from chaosfm.forecasters._baselines import _begin_fit, _read_context, _series_by_asset

VALIDATION_LYAPUNOV_TIMES = 12.0
"""Longest validation forecast, in Lyapunov times: past the ~10 Λ the best published models hold
on Lorenz-63 (Pathak et al. 2018; Gauthier et al. 2021), longer runs only add cost."""

VPT_THRESHOLD = 0.4
"""Normalised error at which a forecast stops being valid (Pathak et al. 2018, PRL 120, 024102),
the threshold of :func:`chaosfm.evaluate.valid_prediction_time`."""

_CLIP_MARGIN = 0.5
"""Closed-loop states are clipped to the training range widened by this fraction of it."""


def require_real(
    value: Any, name: str, *, low: float, high: float | None = None, low_inclusive: bool = False
) -> float:
    """``value`` as a float in ``(low, high]`` (``[low, high]`` when ``low_inclusive``), or a
    ConfigError (a ValueError) that names ``name`` and the rule."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    value = float(value)
    above = value >= low if low_inclusive else value > low
    if not above or (high is not None and value > high):
        left = "[" if low_inclusive else "("
        right = f"{high:g}]" if high is not None else "inf)"
        raise ConfigError(f"{name} must lie in {left}{low:g}, {right}, got {value:g}")
    return value


def positive(value: Any, name: str) -> float:
    """A finite number > 0 (see :func:`require_real`)."""
    return require_real(value, name, low=0.0)


def non_negative(value: Any, name: str) -> float:
    """A finite number >= 0."""
    return require_real(value, name, low=0.0, low_inclusive=True)


def in_unit_interval(value: Any, name: str) -> float:
    """A finite number in (0, 1]."""
    return require_real(value, name, low=0.0, high=1.0)


def count(value: Any, name: str) -> int:
    """An integer >= 1."""
    return require_int(value, name, 1)


def require_choice(value: Any, name: str, candidates: Sequence[Any], check: Any) -> tuple[Any, ...]:
    """The values a hyperparameter may take: ``(value,)`` when fixed (checked by ``check``), the
    searched ``candidates`` when ``value`` is None."""
    if value is None:
        return tuple(candidates)
    return (check(value, name),)


def settings_grid(levels: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the levels, as dicts, in a fixed order."""
    names = list(levels)
    return [dict(zip(names, values)) for values in itertools.product(*levels.values())]


@dataclass(frozen=True)
class Scaling:
    """Per-channel standardisation fitted on training rows, and the clip box of closed loops.

    Attributes:
        mean: ``(C,)`` training mean.
        std: ``(C,)`` training standard deviation (1 for a constant channel).
        low: ``(C,)`` lower clip bound, in normalised units.
        high: ``(C,)`` upper clip bound, in normalised units.
    """

    mean: np.ndarray
    std: np.ndarray
    low: np.ndarray
    high: np.ndarray

    @classmethod
    def fit(cls, series: Sequence[np.ndarray]) -> "Scaling":
        """From every training asset's rows ``(T_a, C)``, pooled."""
        rows = np.concatenate(list(series))
        mean, std = rows.mean(axis=0), rows.std(axis=0)
        std = np.where(std > 0, std, 1.0)
        normalised = (rows - mean) / std
        low, high = normalised.min(axis=0), normalised.max(axis=0)
        margin = _CLIP_MARGIN * np.maximum(high - low, 1.0)
        return cls(mean=mean, std=std, low=low - margin, high=high + margin)

    def normalise(self, values: np.ndarray) -> np.ndarray:
        return (values - self.mean) / self.std

    def restore(self, values: np.ndarray) -> np.ndarray:
        return values * self.std + self.mean

    def clip(self, values: np.ndarray) -> np.ndarray:
        """``(..., C)`` normalised states held inside the box."""
        return np.clip(values, self.low, self.high)


@dataclass(frozen=True)
class ValidationPlan:
    """Where the validation search fits and forecasts.

    Attributes:
        split: per asset, the first held-out row; candidates are fitted on rows ``[:split]``.
        windows: ``(asset index, origin)`` of every validation forecast; its context is the
            asset's rows before ``origin``, its truth the ``horizon`` rows from ``origin``.
        horizon: steps of each validation forecast.
        unit: time of one step in Lyapunov times (``lambda dt``), or 1 to score in steps.
        unit_name: ``"Lyapunov times"`` or ``"steps"``.
    """

    split: tuple[int, ...]
    windows: tuple[tuple[int, int], ...]
    horizon: int
    unit: float
    unit_name: str

    def fit_part(self, series: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Each asset's rows before its held-out part."""
        return [values[:cut] for values, cut in zip(series, self.split)]

    def contexts(self, series: Sequence[np.ndarray], rows: int) -> np.ndarray:
        """``(B, rows, C)``: the last ``rows`` rows before each validation origin."""
        return np.stack([series[a][origin - rows : origin] for a, origin in self.windows])

    def truth(self, series: Sequence[np.ndarray]) -> np.ndarray:
        """``(B, H, C)``: what followed each validation origin."""
        return np.stack([series[a][origin : origin + self.horizon] for a, origin in self.windows])


def plan_validation(
    lengths: Sequence[int],
    *,
    fraction: float,
    windows: int,
    fit_rows: int,
    context_rows: int,
    lyapunov_exponent: float | None,
    dt: float | None,
) -> ValidationPlan:
    """Hold out the last ``fraction`` of each asset and place ``windows`` origins in it.

    The horizon is :data:`VALIDATION_LYAPUNOV_TIMES` Lyapunov times when the exponent and ``dt``
    are known (in steps otherwise, the horizon is half the shortest held-out part), and never
    more than half the shortest held-out part, so origins spread over the other half.

    Args:
        lengths: rows of each training asset.
        fraction: share of each asset held out, in (0, 1).
        windows: validation origins per asset (fewer when the held-out part is short).
        fit_rows: the fewest rows a candidate needs to be fitted on (per asset, before the split).
        context_rows: the rows a forecast needs before its origin.
        lyapunov_exponent: largest Lyapunov exponent per unit time, or None.
        dt: time per row, or None.

    Raises:
        ValueError: an asset too short to fit on ``fit_rows`` rows and still hold out two rows.
    """
    splits = [n - max(2, math.ceil(fraction * n)) for n in lengths]
    short = [(n, cut) for n, cut in zip(lengths, splits) if cut < max(fit_rows, context_rows)]
    if short:
        n, _ = short[0]
        need = math.ceil((max(fit_rows, context_rows) + 2) / (1 - fraction))
        raise ValueError(
            f"the validation search holds out the last validation_fraction={fraction:g} of each "
            f"training asset and fits on the rest, which needs {max(fit_rows, context_rows)} rows; "
            f"an asset has {n} rows (about {need} are needed). Pass more training rows or fix "
            f"every searched hyperparameter in the constructor."
        )
    held_out = min(n - cut for n, cut in zip(lengths, splits))
    known = lyapunov_exponent is not None and dt is not None and lyapunov_exponent > 0 and dt > 0
    unit = float(lyapunov_exponent * dt) if known else 1.0
    target = math.ceil(VALIDATION_LYAPUNOV_TIMES / unit) if known else held_out
    horizon = max(1, min(target, held_out // 2))
    planned = []
    for index, (n, cut) in enumerate(zip(lengths, splits)):
        origins = np.unique(np.linspace(cut, n - horizon, windows).round().astype(int))
        planned += [(index, int(origin)) for origin in origins]
    return ValidationPlan(
        split=tuple(splits), windows=tuple(planned), horizon=horizon, unit=unit,
        unit_name="Lyapunov times" if known else "steps",
    )


def valid_steps(paths: np.ndarray, truth: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``(B,)`` steps each path stays valid: before its normalised error first exceeds 0.4.

    ``e(t) = sqrt(mean_c ((paths - truth) / scale)^2)``, the definition of
    :func:`chaosfm.evaluate.valid_prediction_time` (which sits above this package) in steps.

    Args:
        paths: ``(B, H, C)`` forecasts.
        truth: ``(B, H, C)`` what happened.
        scale: ``(C,)`` per-channel scale.
    """
    error = np.sqrt(np.mean(np.square((paths - truth) / scale), axis=-1))  # (B, H)
    exceeded = error > VPT_THRESHOLD
    return np.where(exceeded.any(axis=1), exceeded.argmax(axis=1), error.shape[1])


def mean_valid_time(
    paths: np.ndarray, plan: ValidationPlan, series: Sequence[np.ndarray]
) -> float:
    """Mean valid time of the validation forecasts ``paths`` ``(B, H, C)``, in ``plan``'s unit.

    The scale is each channel's standard deviation over the rows candidates are fitted on.
    """
    scale = np.concatenate(plan.fit_part(series)).std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    return float(valid_steps(paths, plan.truth(series), scale).mean() * plan.unit)


def best_setting(scored: Sequence[tuple[dict[str, Any], float]]) -> dict[str, Any]:
    """The setting with the highest score; the first one listed among ties."""
    return dict(max(scored, key=lambda pair: pair[1])[0])


def frame_clock(attrs: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """``(lyapunov_exponent, dt)`` from a frame's attrs, None where absent or not positive."""
    values = []
    for name in ("lyapunov_exponent", "dt"):
        value = attrs.get(name)
        ok = isinstance(value, numbers.Real) and math.isfinite(value) and value > 0
        values.append(float(value) if ok else None)
    return values[0], values[1]


def perturbed_starts(
    last: np.ndarray, noise_std: np.ndarray, num_samples: int, key: Any, who: str
) -> np.ndarray:
    """``(S, C)`` last context rows: row 0 as given, rows ``1..S-1`` plus ``N(0, noise_std^2)``.

    Args:
        last: ``(C,)`` the context's last row, normalised.
        noise_std: ``(C,)`` the one-step residual standard deviation, normalised.
        num_samples: S; with S = 1 nothing is drawn and ``key`` may be None.
        key: a JAX key for the draws.
        who: the forecaster, quoted when ``key`` is missing.
    """
    require_int(num_samples, "num_samples", 1)
    starts = np.repeat(last[None, :], num_samples, axis=0)
    if num_samples > 1:
        rng = numpy_rng(require_key(key, f"{who}.forecast with num_samples > 1"))
        starts[1:] += noise_std * rng.standard_normal((num_samples - 1, last.shape[0]))
    return starts


class AbstractClosedLoopForecaster(AbstractForecaster):
    """``fit`` and ``forecast`` of a one-step flow map iterated in closed loop.

    ``fit`` standardises the training rows (:class:`Scaling`), runs the validation search over
    :meth:`_search_grid` when it has more than one setting, records the winner in ``chosen_``
    (and every setting's score in ``search_scores_``), and refits it on all training rows.
    ``forecast`` returns the unperturbed run as ``point`` and sample 0, and ``S - 1`` runs from
    perturbed last rows (:func:`perturbed_starts`). Subclasses implement the hooks below.

    Attributes:
        chosen_: the hyperparameters used, searched or fixed.
        search_scores_: ``[(setting, mean valid time), ...]`` of the search (empty without one).
        search_unit_: the unit of those scores, ``"Lyapunov times"`` or ``"steps"``.
        noise_std_: ``(C,)`` one-step residual standard deviation on the training rows, in
            normalised units: the size of the sample perturbations.
    """

    kinds = ("trajectory",)

    def _init_search(self, validation_fraction: float, validation_windows: int) -> None:
        self.validation_fraction = require_real(
            validation_fraction, "validation_fraction", low=0.0, high=0.9
        )
        self.validation_windows = require_int(validation_windows, "validation_windows", 1)
        self.chosen_: dict[str, Any] | None = None
        self.search_scores_: list[tuple[dict[str, Any], float]] = []
        self.search_unit_: str | None = None
        self.noise_std_: np.ndarray | None = None
        self.scaling: Scaling | None = None
        self._columns: list[str] | None = None

    # -- hooks -------------------------------------------------------------------------------

    @abc.abstractmethod
    def _search_grid(self) -> list[dict[str, Any]]:
        """Every setting the search compares (one setting: nothing to search)."""

    @abc.abstractmethod
    def _context_rows(self, setting: Mapping[str, Any]) -> int:
        """Rows a forecast context needs under ``setting``."""

    @abc.abstractmethod
    def _fit_rows(self, setting: Mapping[str, Any]) -> int:
        """The fewest rows per asset a fit under ``setting`` needs."""

    @abc.abstractmethod
    def _score(
        self, grid: list[dict[str, Any]], series: list[np.ndarray], plan: ValidationPlan
    ) -> list[float]:
        """Mean valid time of each setting of ``grid``: fitted on ``plan.fit_part(series)``,
        forecast from ``plan.contexts`` (scored by :func:`mean_valid_time`)."""

    @abc.abstractmethod
    def _fit_final(self, setting: dict[str, Any], series: list[np.ndarray]) -> np.ndarray:
        """Fit ``setting`` on all normalised training ``series``; return the ``(C,)`` one-step
        residual standard deviation."""

    @abc.abstractmethod
    def _paths(self, contexts: np.ndarray, horizon: int) -> np.ndarray:
        """``(B, H, C)`` closed-loop runs of the fitted model from normalised ``contexts``
        ``(B, T, C)``."""

    # -- the protocol ------------------------------------------------------------------------

    def fit(self, frame: pd.DataFrame) -> "AbstractClosedLoopForecaster":
        """Search (on the held-out end of each training asset), then refit on all rows."""
        _, self._columns = _begin_fit(self, frame)
        raw = list(_series_by_asset(frame, self._columns).values())
        self.scaling = Scaling.fit(raw)
        series = [self.scaling.normalise(values) for values in raw]
        grid = self._search_grid()
        self.search_scores_, self.search_unit_ = [], None
        if len(grid) > 1:
            lyapunov, dt = frame_clock(frame.attrs)
            plan = plan_validation(
                [len(values) for values in series],
                fraction=self.validation_fraction,
                windows=self.validation_windows,
                fit_rows=max(self._fit_rows(setting) for setting in grid),
                context_rows=max(self._context_rows(setting) for setting in grid),
                lyapunov_exponent=lyapunov,
                dt=dt,
            )
            self.search_scores_ = list(zip(grid, self._score(grid, series, plan)))
            self.search_unit_ = plan.unit_name
            chosen = best_setting(self.search_scores_)
        else:
            chosen = grid[0]
        short = [len(values) for values in series if len(values) < self._fit_rows(chosen)]
        if short:
            raise ValueError(
                f"{type(self).__name__}.fit needs at least {self._fit_rows(chosen)} rows per "
                f"asset with {chosen}; an asset has {short[0]}"
            )
        self.chosen_ = chosen
        self.noise_std_ = self._fit_final(chosen, series)
        return self

    def forecast(
        self, context: pd.DataFrame, horizon: int, num_samples: int, *, key: Any = None
    ) -> Forecast:
        """Samples ``(S, H, C)``; ``point`` and sample 0 are the unperturbed closed-loop run.

        ``key`` is needed when ``num_samples > 1`` (the perturbations).
        """
        who = type(self).__name__
        if self.chosen_ is None:
            raise RuntimeError(f"{who}.forecast was called before fit")
        need = self._context_rows(self.chosen_)
        values, asset = _read_context(
            self, context, horizon, num_samples, need, self._context_reason(self.chosen_)
        )
        normalised = self.scaling.normalise(values[-need:])
        starts = perturbed_starts(normalised[-1], self.noise_std_, num_samples, key, who)
        contexts = np.repeat(normalised[None], num_samples, axis=0)  # (S, T, C)
        contexts[:, -1] = starts
        samples = self.scaling.restore(self._paths(contexts, horizon))
        return Forecast(samples, self._columns, asset=asset, point=samples[0])

    @abc.abstractmethod
    def _context_reason(self, setting: Mapping[str, Any]) -> str:
        """What the context rows are needed for, quoted in the too-short error."""
