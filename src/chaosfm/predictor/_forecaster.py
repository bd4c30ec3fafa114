"""The online predictor behind the ``AbstractForecaster`` protocol, so ``evaluate`` can score it."""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import numpy as np
import pandas as pd
from scipy.special import ndtri

from chaosfm.data import DataError, trained_through
from chaosfm.forecasters import (
    ACI_LEVELS,
    AbstractForecaster,
    ACIState,
    Forecast,
    aci_init,
    aci_update,
    aci_weights,
    require_key,
    usable_levels,
)
from chaosfm.predictor._config import PredictorConfig
from chaosfm.predictor._draws import mixture_draws
from chaosfm.predictor._packed_step import packed_step
from chaosfm.predictor._predictor import PredictorOutput, init_predictor, resume_after_gap, warm_start


@functools.lru_cache(maxsize=8)
def _mixture_paths(config: PredictorConfig, num_samples: int, horizon: int):
    """``(state, key) -> (num_samples, horizon)`` increments, compiled once per shape."""
    return jax.jit(lambda state, key: mixture_draws(state, config, (num_samples, horizon), key=key))


FEEDBACK_DRAWS = 1024
"""Mixture draws per step whose quantiles the online calibration judges each observation by:
the step's own 64 samples give quantiles so noisy that the levels adapt to the noise (on i.i.d.
Laplace returns the 50% interval then covered 0.55 rather than 0.50)."""


@functools.lru_cache(maxsize=8)
def _feedback_draws(config: PredictorConfig, dtype: str = "float32"):
    """``(packed state, key, count) -> (FEEDBACK_DRAWS,)`` draws of the next increment.

    ``dtype``, the packed state's float dtype, is part of the cache key: the layout differs.
    """
    layout = packed_step(config).state_layout
    return jax.jit(lambda packed, key, count: mixture_draws(
        layout.unpack(packed), config, (FEEDBACK_DRAWS,), key=jax.random.fold_in(key, count)))


@functools.lru_cache(maxsize=8)
def _feedback_scale(config: PredictorConfig):
    """``packed state -> scale``: the EMA scale the next increment's normal is drawn at."""
    layout = packed_step(config).state_layout
    return jax.jit(lambda packed: layout.unpack(packed).scale)


def _normal_increments(config: PredictorConfig) -> bool:
    """Whether every draw of the next increment is ``N(0, scale^2)``: all draws from the normal
    (``gaussian_share`` 1) and none of the kernels' mean kept (``drift`` 0), the defaults."""
    return config.gaussian_share == 1.0 and config.drift == 0.0


class _Cursor(NamedTuple):
    """Where the last forecast of an asset left the predictor: the state after feeding ``fed``
    from the start ``how`` names ("fitted", "gap": restarted after the fitted state, "new")."""

    how: str
    fed: np.ndarray
    stream: "_Stream"


class _Stream(NamedTuple):
    """One asset's predictor: its state, the last step's output and the online calibration."""

    state: Any
    out: PredictorOutput | None
    calibration: ACIState | None


class OnlinePredictorForecaster(AbstractForecaster):
    """Runs the online predictor through each asset of ``fit``'s frame, then through each context.

    One predictor state per asset: ``fit`` runs a predictor over every asset's rows; an asset it
    did not see starts a new predictor on its context.

    ``forecast`` continues from the state ``fit`` left (rows of the context at or before
    ``trained_through`` are skipped, later rows are fed one by one) and samples ``horizon`` steps
    as sums of i.i.d. increments drawn from the last step's kernel mixture: a one-step
    predictor's distribution carried forward, not a multi-step model. Every increment of every
    path is a fresh draw from the mixture (:func:`mixture_draws`), not a resampling of the step's
    ``num_samples`` draws: 64 atoms resampled into 100 paths cost ~1.5% of CRPS against 100
    fresh draws (the ensemble term ``E|X - X'| / 2`` shrinks by ``1/64 + 1/100``, not ``1/100``).

    Online calibration (``calibration_gammas``, on by default): as ``chaosfm stream`` does, each
    observation's miss against the previous step's quantiles moves the levels the mixture is read
    at (adaptive conformal inference, Gibbs & Candès 2021; several step sizes are aggregated by
    exponential weights on the pinball loss: :func:`~chaosfm.forecasters.aci_update`), from the
    first row ``fit`` sees. The quantiles a miss is judged by are those of
    :data:`FEEDBACK_DRAWS` fresh draws, as the forecast's are, or, when every draw is the normal of
    the EMA scale (the default ``gaussian_share`` 1 with ``drift`` 0), that normal's exact ones. The kernels are near-Gaussian while daily returns are more peaked with heavier tails,
    so the nominal 50% interval of the raw mixture covers too much; the adapted levels reshape
    each increment's distribution (every draw is moved to the aggregated quantile at its rank
    among the draws), and the paths are sums of the reshaped increments. ``()`` turns it off.

    The evaluator hands it each origin's whole history (``reads_all_history``), so a forecast is
    the predictor having streamed every row since ``fit``, whatever ``context_length`` is. The
    state after the last forecast's rows is kept per asset: a context that extends them (the same
    values, then more) feeds only the new rows, so scoring ``n`` successive windows costs ``n``
    steps rather than ``n^2 / 2``, with the same result as feeding every row again.

    Args:
        config: the predictor's config (a mapping is read as one, as from YAML).
        seed: seed of the predictor's keys.
        calibration_gammas: ACI step sizes of the online calibration's experts; ``()``: none.
            The default, one expert at 0.01, was chosen on rows before each built-in market's
            cutoff as the step most likely to give, over a period as long as each market's fresh
            one, both a CRPS at most the random walk's and both coverages in band
            (``bench/predictor_calibration_step.py``; docs/predictor.md#on-markets).
        symmetric_calibration: adapt the levels ``tau`` and ``1 - tau`` as one pair
            (:func:`symmetric_levels`): the calibration widens or narrows the central intervals
            and never moves the median, so it cannot bring back the drift ``drift = 0`` leaves out.
            On by default: on rows before each built-in market's cutoff it lowered the worst
            market's CRPS against the random walk (docs/predictor.md#on-markets).
    """

    name = "online_predictor"
    kinds = ("market", "trajectory")
    reads_all_history = True

    def __init__(self, config: PredictorConfig | dict | None = None, *, seed: int = 0,
                 calibration_gammas: tuple[float, ...] | list[float] = (0.01,),
                 symmetric_calibration: bool = True):
        # A mapping is a config's `model_options.online_predictor.config` read from YAML.
        self.config = PredictorConfig.model_validate(config) if isinstance(config, dict) else config or PredictorConfig()
        self.seed = seed
        self.calibration_gammas = tuple(float(g) for g in calibration_gammas)
        self.symmetric_calibration = bool(symmetric_calibration)
        if not all(0.0 < g < 1.0 for g in self.calibration_gammas):
            raise ValueError(f"calibration_gammas must lie in (0, 1), got {list(self.calibration_gammas)}")
        self.streams: dict[str, _Stream] = {}
        self.column: str | None = None
        self._cursors: dict[str, _Cursor] = {}

    @property
    def states(self) -> dict[str, Any]:
        """The predictor state ``fit`` left for each asset."""
        return {asset: stream.state for asset, stream in self.streams.items()}

    @property
    def state(self):
        """The state of the only asset fitted (None before ``fit``)."""
        if len(self.streams) > 1:
            raise AttributeError("several assets were fitted: read states[ASSET]")
        return next(iter(self.states.values()), None)

    def _start(self, values: np.ndarray) -> _Stream:
        """A new predictor run over ``values``."""
        state = init_predictor(self.config, float(values[0]), key=jax.random.key(self.seed))
        calibration = aci_init(self.calibration_gammas, 1, 1) if self.calibration_gammas else None
        return self._feed(_Stream(state, None, calibration), values[1:])

    def _feed(self, stream: _Stream, values: np.ndarray) -> _Stream:
        step = packed_step(self.config)
        packed = step.pack(stream.state)
        out, calibration = stream.out, stream.calibration
        feedback_key = jax.random.key(self.seed + 2)
        previous = float(stream.state.last)
        for value in values:
            if not np.isfinite(value):
                raise DataError(f"value {value!r} is NaN or infinite", rule="finite values")
            if calibration is not None and out is not None and bool(out.warm):
                increment = math.log(value / previous) if self.config.increments == "log" else value - previous
                if _normal_increments(self.config):
                    # The next increment is N(0, scale^2): its quantiles in closed form, not
                    # estimated from FEEDBACK_DRAWS draws (whose noise the levels would follow).
                    scale = float(_feedback_scale(self.config)(packed))
                    calibration = self._calibrate_normal(calibration, scale, increment)
                else:
                    draws = np.asarray(_feedback_draws(self.config, step.dtype.name)(
                        packed, feedback_key, int(out.count)), np.float64)
                    calibration = self._calibrate(calibration, draws, increment)
            packed_out, packed = step(packed, step.value(value))
            out = step.output(packed_out)
            previous = float(value)
            if int(out.count) == self.config.warmup:
                state = warm_start(step.unpack(packed), self.config, key=jax.random.key(self.seed + 1))
                packed = step.pack(state)
        return _Stream(step.unpack(packed), out, calibration)

    def _calibrate(self, calibration: ACIState, samples: np.ndarray, value: float) -> ACIState:
        """Every expert's levels after the increment ``value``, judged by its quantiles of the
        next increment's ``samples``."""
        levels = usable_levels(calibration.levels[:, 0, 0])  # (G, L)
        quantiles = np.quantile(samples, levels.reshape(-1)).reshape(levels.shape)
        return self._judged(calibration, quantiles, float(np.std(samples)), value)

    def _calibrate_normal(self, calibration: ACIState, scale: float, value: float) -> ACIState:
        """As :meth:`_calibrate` for a next increment ``N(0, scale^2)``: its exact quantiles. The
        levels 0 and 1 (where ACI's may be clipped) read as the extreme quantiles of
        :data:`FEEDBACK_DRAWS` normal draws, about 3.3 spreads, rather than infinite ones."""
        edge = 1.0 / (FEEDBACK_DRAWS + 1)
        levels = np.clip(usable_levels(calibration.levels[:, 0, 0]), edge, 1.0 - edge)  # (G, L)
        return self._judged(calibration, scale * ndtri(levels), scale, value)

    def _judged(self, calibration: ACIState, quantiles: np.ndarray, spread: float, value: float) -> ACIState:
        """The ACI update of every expert by the miss of ``value`` against its ``quantiles`` (G, L)."""
        spread = np.array([max(spread, 1e-12 * max(1.0, abs(value)))])
        updated = aci_update(calibration, 0, np.array([value]), quantiles[:, None, :], spread, self.calibration_gammas)
        if self.symmetric_calibration:
            updated = updated._replace(levels=symmetric_levels(updated.levels))
        return updated

    def _advance(self, asset: str, how: str, values: np.ndarray) -> _Stream:
        """The asset's predictor after feeding ``values`` from the start ``how`` names,
        continuing from the asset's cursor when ``values`` extends what it fed."""
        cursor = self._cursors.get(asset)
        if (cursor is not None and cursor.how == how and len(cursor.fed) <= len(values)
                and np.array_equal(cursor.fed, values[: len(cursor.fed)])):
            stream = self._feed(cursor.stream, values[len(cursor.fed):])
        elif how == "new":
            stream = self._start(values)
        elif how == "gap":
            fitted = self.streams[asset]
            stream = self._feed(fitted._replace(state=resume_after_gap(fitted.state, values[0])), values[1:])
        else:
            stream = self._feed(self.streams[asset], values)
        self._cursors[asset] = _Cursor(how, values.copy(), stream)
        return stream

    def fit(self, frame: pd.DataFrame) -> "OnlinePredictorForecaster":
        self.column = self.target_columns(frame)[0]
        self.streams, self._cursors = {}, {}
        for asset, part in frame.groupby("asset", sort=False):
            self.streams[str(asset)] = self._start(part[self.column].to_numpy(np.float64))
        self.trained_through = trained_through(frame)
        return self

    def forecast(self, context: pd.DataFrame, horizon: int, num_samples: int, *, key: Any = None) -> Forecast:
        key = require_key(key, type(self).__name__)
        self.column = self.column or self.target_columns(context)[0]
        asset = str(context["asset"].iloc[0])
        if asset not in self.streams:  # not fitted on this asset: a new predictor over the context
            how, values = "new", context[self.column].to_numpy(np.float64)
        else:
            seen = (self.trained_through or {}).get(asset)
            fresh = context if seen is None else context[context["timestamp"] > seen]
            values = fresh[self.column].to_numpy(np.float64)
            # The context starts after trained_through: the rows in between are unknown, so the
            # first row restarts the increments instead of posing as one step over the gap. Fed
            # as one increment, a gap of g rows is a move of ~sqrt(g) sigmas (clipped at 50) that
            # stays in the signature kernel's residual variance and regression with weight
            # forgetting^k for k steps (0.08 after the 512 rows of a default context).
            how = "gap" if len(values) and len(values) == len(context) else "fitted"
        stream = self._advance(asset, how, values)
        if stream.out is None:
            raise DataError("no observation after warm-up to forecast from", rule="enough history")
        last = float(context[self.column].iloc[-1])
        draws = np.asarray(_mixture_paths(self.config, num_samples, horizon)(stream.state, key), np.float64)
        if stream.calibration is not None and bool(stream.out.warm):
            draws = _reshaped(draws, stream.calibration)
        paths = np.cumsum(draws, axis=1)
        paths = last * np.exp(paths) if self.config.increments == "log" else last + paths
        return Forecast(paths, [self.column], asset=asset)


def symmetric_levels(levels: np.ndarray) -> np.ndarray:
    """Adapted levels ``(..., L)`` of a grid symmetric about 0.5 made symmetric too: the level of
    ``tau`` becomes ``(a(tau) + 1 - a(1 - tau)) / 2`` and 0.5 stays 0.5.

    Applied after each ACI update, the pair ``(tau, 1 - tau)`` moves by ``gamma / 2 * (inside -
    (1 - 2 tau))``, ``inside`` whether the observation fell in the central interval between them:
    ACI on the central intervals' coverage (their width), with no move of the centre.
    """
    return 0.5 * (levels + 1.0 - levels[..., ::-1])


def _reshaped(draws: np.ndarray, calibration: ACIState) -> np.ndarray:
    """``draws`` (i.i.d. increments of one distribution, any shape) moved to the aggregated
    adaptive quantiles: each draw at rank level ``u`` gains the interpolated difference between
    the experts' weighted quantiles and the nominal ones at ``u`` (flat beyond the grid), then the
    results are handed back in the draws' rank order."""
    flat = draws.reshape(-1)
    grid = np.asarray(ACI_LEVELS)
    levels = usable_levels(calibration.levels[:, 0, 0])  # (G, L)
    experts = np.quantile(flat, levels.reshape(-1)).reshape(levels.shape)
    combined = (aci_weights(calibration)[:, 0, 0] * experts).sum(axis=0)  # (L,)
    ranks = np.argsort(np.argsort(flat, kind="stable"), kind="stable")
    u = (ranks + 0.5) / len(flat)
    moved = flat + np.interp(u, grid, combined - np.quantile(flat, grid))
    return np.sort(moved)[ranks].reshape(draws.shape)
