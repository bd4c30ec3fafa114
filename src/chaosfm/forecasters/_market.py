"""A cross-asset market model: quantiles of cumulative log returns, pooled over assets.

:class:`CrossAssetForecaster` (``market_model``) is one small network fitted on every asset of the
fit frame at once and conditioned on the asset by a learned embedding. From the rows at or before
a forecast origin ``T`` it reads causal inputs (:func:`market_inputs`):

- range-based daily variance ``v_t = GK_t + g_t^2``: the Garman–Klass estimator
  ``GK = 0.5 ln(h/l)^2 - (2 ln 2 - 1) ln(c/o)^2`` (Garman & Klass 1980, J. Business 53(1), eq. 18's
  "practical" form) plus the squared overnight gap ``g = ln(o_t / c_{t-1})``, averaged over the last
  1, 5 and 22 days as the HAR-RV model does (Corsi 2009, J. Financial Econometrics 7(2), eq. 8) and
  over 66 and 250 days (the levels volatility reverts to), and the close-to-close realized variance
  over 5 and 22 days, all as logs;
- the last five log returns and the 5- and 22-day cumulative returns, in units of the scale below;
- the candle features of :func:`chaosfm.data.candle_features` at ``T`` (body, wicks and range in
  units of the scale, the volume z-score, the log of the 20-day realized volatility).

Every input is standardised with the mean and spread of the fit rows (never of a forecast's
context) and clipped to ``[-clip, clip]``, so one crash day cannot push the network far outside
what it was trained on.

The head gives, for each step ``h = 1..H``, the quantiles at ``levels = 0.01, ..., 0.99`` of the
cumulative log return ``R_h = ln(P_{T+h} / P_T)`` in units of ``s_T sqrt(h)``, where
``s_T^2 = k_a (v^{(1)} + v^{(5)} + v^{(22)}) / 3`` is an equal-weight HAR scale, with ``k_a`` the
ratio of squared next-day returns to ``s^2`` on asset ``a``'s fit rows (pooled for an asset the fit
did not see): the network learns a correction of a volatility forecast, not raw return levels.
The quantiles are monotone by construction: the lowest is free, the others add softplus
increments (a cumulative sum of positive steps, each at least a thousandth of the normal
quantiles' spacing). With the last layer initialised to zero the head starts at the quantiles of
``N(0, s_T^2 h)``. Training minimises the pinball loss averaged over levels and steps, whose
integral over all levels is half the CRPS (Gneiting & Raftery 2007, eq. 24; Laio & Tamea 2007):
a grid of 99 levels approximates CRPS training.

Samples are comonotone: one uniform ``u`` per path, shared by every step, mapped through each
step's quantile function (linear between grid levels, linear extrapolation beyond 0.01 and 0.99),
giving price paths ``P_T exp(q_h(u))``. Marginals at each step are the forecast quantiles; the
dependence between steps is not modelled (the marginal scores do not see it). The uniforms are
independent draws, not stratified: the fair CRPS estimator the evaluator uses assumes independent
samples, and stratified ones would lower the score by about ``E|X - X'| / 2S`` for nothing.

Hyperparameters (each candidate's width, learning rate, weight decay and loss units, and the
number of Adam steps, 0 included: the untrained HAR-normal head) are chosen on a validation split
of the fit rows: the last ``validation_fraction`` of each asset's origins, with the ``H`` origins
before it dropped so that no training target reaches into it, scored by the pinball loss of log
returns. The winner is then retrained on every fit row for the chosen number of steps, ``ensemble``
times from different initial weights and batches, and the members' quantiles are averaged.

Dimension letters: N training origins, B batch, F input features, H horizon steps, Q quantile
levels, S sample paths, E asset-embedding width, A assets (+1 for the pooled embedding).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any, final

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jaxtyping import Array, Float, Int, PRNGKeyArray
from scipy.special import ndtri

from chaosfm._config import require_int
from chaosfm._random import numpy_rng
from chaosfm.data import candle_features, require_ohlc, split_assets
from chaosfm.forecasters._base import AbstractForecaster, Forecast, require_key
from chaosfm.forecasters._baselines import _begin_fit, _read_context

_WINDOWS = (1, 5, 22)
"""Days over which the range-based variance is averaged (HAR-RV's day, week and month)."""
_LONG_WINDOWS = (66, 250)
"""Longer averages (a quarter, a year) that volatility reverts to; defined from 22 rows on, over the
rows there are until the window fills, so a short context still gives every input."""
_RETURN_LAGS = 5
_MIN_SPACING = 1e-3
"""Smallest gap between neighbouring quantiles, as a share of the normal quantiles' gap there."""
_VARIANCE_FLOOR = 1e-10
"""Daily variance below which logs are floored (a daily volatility of 0.001%, far below any
index's): a day with ``high == low`` and no gap must not give ``log 0``."""
_CONTEXT_ROWS = max(_WINDOWS) + 1
"""Rows the inputs at one origin need: 22 log returns need 23 closes."""
_READ_ROWS = max(_LONG_WINDOWS) + 1
"""Rows the inputs at one origin read when the context has them."""
_NEEDS_CANDLES = "market_model (Garman-Klass variance and candle features)"
FEATURE_NAMES = (
    "log_gk_1", "log_gk_5", "log_gk_22", "log_gk_66", "log_gk_250", "log_rv_5", "log_rv_22",
    *(f"return_lag_{k}" for k in range(_RETURN_LAGS)),
    "cumulative_return_5", "cumulative_return_22", "gap",
    "body", "upper_wick", "lower_wick", "range", "volume_z", "log_realized_vol",
)
"""The inputs :func:`market_inputs` computes, in column order."""


@dataclasses.dataclass(frozen=True)
class MarketModelConfig:
    """Shape, training and search settings of :class:`CrossAssetForecaster`."""

    horizon: int = 5  # steps the head forecasts; forecast() may ask for fewer, not more
    quantile_count: int = 99  # levels 1/(n+1) .. n/(n+1): 0.01 .. 0.99 for 99
    embedding: int = 8  # asset-embedding width: a few numbers per market shift its scale and tails
    depth: int = 2  # hidden layers of the MLP
    widths: tuple[int, ...] = (64,)  # hidden widths tried by the search
    learning_rates: tuple[float, ...] = (1e-3,)  # Adam rates tried by the search
    weight_decays: tuple[float, ...] = (1e-4,)  # AdamW decays tried by the search
    loss_units: tuple[str, ...] = ("standardised", "returns")  # training loss per origin, tried by the search
    max_steps: int = 600  # longest run of the search; the final fit uses the best step count
    eval_every: int = 50  # steps between validation scores (the step-count grid)
    ensemble: int = 5  # networks of the final fit (own initial weights and batches), quantiles averaged
    batch_size: int = 256
    asset_dropout: float = 0.05  # share of training rows shown as the pooled asset, which trains the fallback
    clip: float = 6.0  # standardised inputs are clipped to [-clip, clip]
    validation_fraction: float = 0.2  # tail of each asset's fit origins held out by the search
    seed: int = 0

    def levels(self) -> np.ndarray:
        """The Q quantile levels, ascending."""
        return np.arange(1, self.quantile_count + 1) / (self.quantile_count + 1)


def _check_config(config: MarketModelConfig) -> None:
    for name in ("horizon", "embedding", "depth", "max_steps", "eval_every", "batch_size", "ensemble"):
        require_int(getattr(config, name), name, 1)
    require_int(config.quantile_count, "quantile_count", 3)
    require_int(config.seed, "seed", None)
    for name in ("widths", "learning_rates", "weight_decays", "loss_units"):
        values = getattr(config, name)
        if not isinstance(values, tuple) or not values:
            raise ValueError(f"{name} must be a non-empty tuple, got {values!r}")
    for width in config.widths:
        require_int(width, "widths[...]", 1)
    if any(not 0 < rate < 1 for rate in config.learning_rates):
        raise ValueError(f"learning_rates must lie in (0, 1), got {config.learning_rates}")
    if any(decay < 0 for decay in config.weight_decays):
        raise ValueError(f"weight_decays must be >= 0, got {config.weight_decays}")
    for name in ("asset_dropout", "validation_fraction"):
        if not 0 <= getattr(config, name) < 1:
            raise ValueError(f"{name} must lie in [0, 1), got {getattr(config, name)}")
    if set(config.loss_units) - {"standardised", "returns"}:
        raise ValueError(f"loss_units must be 'standardised' or 'returns', got {config.loss_units}")
    if config.eval_every > config.max_steps:
        raise ValueError(f"eval_every={config.eval_every} exceeds max_steps={config.max_steps}")
    if config.clip <= 0:
        raise ValueError(f"clip must be > 0, got {config.clip}")


# ---- inputs -------------------------------------------------------------------------------------


def _rolling_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over ``window`` rows (row t included), NaN until the window is full."""
    return pd.Series(values).rolling(window, min_periods=window).mean().to_numpy()


def market_inputs(part: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The raw inputs and the scale of every row of one asset (see the module docstring).

    Args:
        part: one asset's validated market rows, in time order.

    Returns:
        ``features`` ``(T, F)`` in the order of :data:`FEATURE_NAMES` and ``scale`` ``(T,)``, the
        daily log-return scale ``s_t`` (a fraction, 0.01 = 1% a day). Row ``t`` uses rows at or
        before ``t`` only; the first :data:`_CONTEXT_ROWS` - 1 rows have NaN inputs.
    """
    o, h, lo, c = (part[k].to_numpy(dtype=np.float64) for k in ("open", "high", "low", "close"))
    previous = np.r_[np.nan, c[:-1]]
    log_return = np.log(c / previous)
    gap = np.log(o / previous)
    garman_klass = 0.5 * np.log(h / lo) ** 2 - (2.0 * math.log(2.0) - 1.0) * np.log(c / o) ** 2
    daily = np.maximum(garman_klass + gap**2, 0.0)
    har = [_rolling_mean(daily, w) for w in _WINDOWS]
    scale = np.sqrt(np.maximum(sum(har) / len(har), _VARIANCE_FLOOR))
    long_run = [
        pd.Series(daily).rolling(w, min_periods=max(_WINDOWS)).mean().to_numpy() for w in _LONG_WINDOWS
    ]
    realized = [_rolling_mean(log_return**2, w) for w in (5, 22)]
    lags = [np.r_[np.full(k, np.nan), log_return[: len(c) - k]] / scale for k in range(_RETURN_LAGS)]
    cumulative = [
        pd.Series(log_return).rolling(w, min_periods=w).sum().to_numpy() / (scale * math.sqrt(w))
        for w in (5, 22)
    ]
    candles = candle_features(part)
    columns = [
        *(np.log(np.maximum(v, _VARIANCE_FLOOR)) for v in (*har, *long_run, *realized)),
        *lags,
        *cumulative,
        gap / scale,
        *(candles[k].to_numpy(dtype=np.float64) / scale for k in ("body", "upper_wick", "lower_wick", "range")),
        candles["volume_z"].to_numpy(dtype=np.float64),
        np.log(np.maximum(candles["realized_vol"].to_numpy(dtype=np.float64), math.sqrt(_VARIANCE_FLOOR))),
    ]
    return np.stack(columns, axis=1), scale


@dataclasses.dataclass(frozen=True)
class _Examples:
    """Training origins of every asset: inputs ``(N, F)``, asset ids ``(N,)``, scales ``(N,)``
    and targets ``(N, H)`` (cumulative log returns)."""

    features: np.ndarray
    assets: np.ndarray
    scales: np.ndarray
    targets: np.ndarray
    origin: np.ndarray  # (N,) row index of the origin within its asset
    rows: np.ndarray  # (N,) rows of the origin's asset in the fit frame

    def take(self, mask: np.ndarray) -> "_Examples":
        return _Examples(*(getattr(self, f.name)[mask] for f in dataclasses.fields(self)))

    def variance_ratios(self, assets: int) -> np.ndarray:
        """``(A + 1,)`` per asset id, ``mean(R_1^2) / mean(s^2)``: the next day's squared return
        over the range-based scale's square (1..A; entry 0 pooled over every origin). Range-based
        variance misses what happens between the prints of the day; this puts it back per market."""
        squared, base = self.targets[:, 0] ** 2, self.scales**2
        ratios = np.full(assets + 1, squared.mean() / base.mean())
        for asset in np.unique(self.assets):
            mine = self.assets == asset
            ratios[asset] = squared[mine].mean() / base[mine].mean()
        return ratios

    def rescaled(self, ratios: np.ndarray) -> "_Examples":
        """The same origins with each scale multiplied by ``sqrt(ratios[asset])``."""
        return dataclasses.replace(self, scales=self.scales * np.sqrt(ratios[self.assets]))


def _examples(parts: Mapping[str, pd.DataFrame], ids: Mapping[str, int], horizon: int) -> _Examples:
    """Every origin with complete inputs and ``horizon`` targets inside its asset's rows."""
    blocks = []
    for asset, part in parts.items():
        features, scale = market_inputs(part)
        log_close = np.log(part["close"].to_numpy(dtype=np.float64))
        rows = len(part)
        origins = np.arange(rows - horizon)
        origins = origins[np.isfinite(features[origins]).all(axis=1)]
        if len(origins) == 0:
            continue
        targets = log_close[origins[:, None] + np.arange(1, horizon + 1)] - log_close[origins, None]
        blocks.append(_Examples(
            features[origins], np.full(len(origins), ids[asset]), scale[origins], targets,
            origins, np.full(len(origins), rows),
        ))
    if not blocks:
        raise ValueError(
            f"CrossAssetForecaster.fit: no asset has {_CONTEXT_ROWS + horizon} rows (inputs need "
            f"{_CONTEXT_ROWS}, targets {horizon} more)"
        )
    return _Examples(*(np.concatenate([getattr(b, f.name) for b in blocks]) for f in dataclasses.fields(_Examples)))


# ---- the network --------------------------------------------------------------------------------


class QuantileNetwork(eqx.Module):
    """Asset embedding + MLP -> monotone quantiles of standardised cumulative returns, one example.

    Attributes:
        embeddings: ``(A, E)``; row 0 is the pooled embedding, used for an asset the fit did not see.
        mlp: ``F + E -> H * Q``.
        base: ``(Q,)`` standard normal quantiles at the levels, the head's starting point.
    """

    embeddings: Float[Array, "A E"]
    mlp: eqx.nn.MLP
    base: Float[Array, " Q"]
    horizon: int = eqx.field(static=True)

    def __init__(self, features: int, assets: int, width: int, config: MarketModelConfig, *, key: PRNGKeyArray):
        embed_key, mlp_key = jax.random.split(key)
        quantiles = config.quantile_count
        self.horizon = config.horizon
        self.embeddings = 0.1 * jax.random.normal(embed_key, (assets + 1, config.embedding))
        mlp = eqx.nn.MLP(
            features + config.embedding, config.horizon * quantiles, width, config.depth,
            activation=jax.nn.gelu, key=mlp_key,
        )
        # A zero last layer starts the head at N(0, s^2 h): the HAR scale, uncorrected.
        last = mlp.layers[-1]
        self.mlp = eqx.tree_at(
            lambda m: (m.layers[-1].weight, m.layers[-1].bias), mlp,
            (jnp.zeros_like(last.weight), jnp.zeros_like(last.bias)),
        )
        self.base = jnp.asarray(ndtri(config.levels()), jnp.float32)

    def __call__(self, features: Float[Array, " F"], asset: Int[Array, ""]) -> Float[Array, "H Q"]:
        """Quantiles ``(H, Q)`` of ``R_h / (s_T sqrt(h))``, ascending along Q."""
        raw = self.mlp(jnp.concatenate([features, self.embeddings[asset]]))
        raw = raw.reshape(self.horizon, -1)  # (H, Q)
        base_steps = jnp.diff(self.base)  # (Q - 1,)
        # A floor of a small share of the normal spacing keeps the levels strictly apart where
        # softplus underflows to 0 in float32; the rest is softplus(x + softplus^-1((1 - share) d)),
        # so that x = 0 gives the normal quantiles' own spacing d.
        floor = _MIN_SPACING * base_steps
        steps = jax.nn.softplus(raw[:, 1:] + jnp.log(jnp.expm1(base_steps - floor))[None, :]) + floor[None, :]
        first = raw[:, :1] + self.base[0]
        return jnp.concatenate([first, first + jnp.cumsum(steps, axis=1)], axis=1)


def pinball_loss(
    quantiles: Float[Array, "*batch H Q"], target: Float[Array, "*batch H"], levels: Float[Array, " Q"]
) -> Float[Array, ""]:
    """Mean pinball (quantile) loss ``max(tau (y - q), (tau - 1)(y - q))`` over every element.

    Args:
        quantiles: predicted quantiles, levels along the last axis.
        target: observed values, one per step.
        levels: the quantile levels ``tau`` in (0, 1).
    """
    error = target[..., None] - quantiles
    tau = levels.reshape((1,) * (error.ndim - 1) + (-1,))  # broadcast along Q only
    return jnp.mean(jnp.maximum(tau * error, (tau - 1.0) * error))


# ---- training -----------------------------------------------------------------------------------


@functools.cache
def _adam() -> Any:
    import optax

    # Clipping: a crash day's targets are tens of scales away; one batch of them must not undo the fit.
    return optax.chain(optax.clip_by_global_norm(1.0), optax.scale_by_adam())


@eqx.filter_jit
def _train_chunk(model, opt_state, data, levels, weights, learning_rate, weight_decay, keys, batch_size: int,
                 asset_dropout: float):
    """``len(keys)`` AdamW steps (decoupled decay, Loshchilov & Hutter 2019) on batches drawn from
    ``data`` (standardised inputs ``(N, F)``, asset ids ``(N,)``, standardised targets ``(N, H)``),
    each row's loss multiplied by ``weights`` ``(N,)``."""
    features, assets, targets = data
    adam = _adam()
    params, static = eqx.partition(model, eqx.is_array)

    def loss(p, x, a, y, w):
        predicted = jax.vmap(eqx.combine(p, static))(x, a)  # (B, H, Q)
        error = y[:, :, None] - predicted
        tau = levels[None, None, :]
        pinball = jnp.mean(jnp.maximum(tau * error, (tau - 1.0) * error), axis=(1, 2))  # (B,)
        return jnp.mean(w * pinball)

    def step(carry, key):
        p, state = carry
        rows_key, drop_key = jax.random.split(key)
        rows = jax.random.randint(rows_key, (batch_size,), 0, features.shape[0])
        # Shown as the pooled asset: the fallback embedding learns from every market.
        pooled = jax.random.bernoulli(drop_key, asset_dropout, (batch_size,))
        a = jnp.where(pooled, 0, assets[rows])
        grads = jax.grad(loss)(p, features[rows], a, targets[rows], weights[rows])
        updates, state = adam.update(grads, state, p)
        p = jax.tree_util.tree_map(lambda w, u: w - learning_rate * (u + weight_decay * w), p, updates)
        return (p, state), None

    (params, opt_state), _ = jax.lax.scan(step, (params, opt_state), keys)
    return eqx.combine(params, static), opt_state


@eqx.filter_jit
def _predict_one(
    model: QuantileNetwork, features: Float[Array, "N F"], assets: Int[Array, " N"]
) -> Float[Array, "N H Q"]:
    return jax.vmap(model)(features, assets)


def _predict(models: Sequence[QuantileNetwork], features: np.ndarray, assets: np.ndarray) -> np.ndarray:
    """``(N, H, Q)``: the members' standardised quantiles averaged level by level (quantile
    averaging keeps them monotone and, for a location-scale family, averages the locations and
    scales; Vincentization, Ratcliff 1979)."""
    features, assets = jnp.asarray(features, jnp.float32), jnp.asarray(assets, jnp.int32)
    return np.mean([np.asarray(_predict_one(m, features, assets), np.float64) for m in models], axis=0)


def _return_pinball(models, features, assets, scales, targets, levels) -> float:
    """Validation score: the pinball loss of the cumulative log returns themselves (not
    standardised), so calm and wild days weigh as they weigh in the CRPS of prices."""
    z = _predict(models, features, assets)  # (N, H, Q)
    unit = scales[:, None] * np.sqrt(np.arange(1, targets.shape[1] + 1))[None, :]  # (N, H)
    error = targets[:, :, None] - z * unit[:, :, None]
    return float(np.mean(np.maximum(levels * error, (levels - 1.0) * error)))


@dataclasses.dataclass(frozen=True)
class _Standardiser:
    """Per-feature mean and spread of the fit rows; standardises and clips inputs ``(..., F)``."""

    mean: np.ndarray
    spread: np.ndarray
    clip: float

    @classmethod
    def fitted(cls, features: np.ndarray, clip: float) -> "_Standardiser":
        spread = features.std(axis=0)
        return cls(features.mean(axis=0), np.where(spread > 1e-12, spread, 1.0), clip)

    def __call__(self, features: np.ndarray) -> np.ndarray:
        return np.clip((features - self.mean) / self.spread, -self.clip, self.clip).astype(np.float32)


# ---- the forecaster -----------------------------------------------------------------------------


@final
class CrossAssetForecaster(AbstractForecaster):
    """One quantile network pooled over every market of the fit frame (see the module docstring).

    Args:
        **settings: fields of :class:`MarketModelConfig`.

    Attributes (after ``fit``):
        config: the settings.
        assets_: asset name -> embedding row (1..A; row 0 is the pooled fallback).
        variance_ratios_: ``(A + 1,)`` the ``k_a`` of the scale, by embedding row.
        chosen_: the search's winner: ``width``, ``learning_rate``, ``weight_decay``,
            ``loss_units``, ``steps`` and its validation pinball loss (log-return units).
        models_: the ``ensemble`` trained networks.
        search_scores_: ``[(setting, best validation loss, its steps), ...]`` of every candidate.
    """

    name = "market_model"
    kinds = ("market",)

    def __init__(self, **settings: Any) -> None:
        fields = {f.name for f in dataclasses.fields(MarketModelConfig)}
        unknown = sorted(set(settings) - fields)
        if unknown:
            raise ValueError(f"market_model does not take option(s) {unknown}; it takes: {', '.join(sorted(fields))}")
        for name in ("widths", "learning_rates", "weight_decays", "loss_units"):
            if name in settings and isinstance(settings[name], list):
                settings[name] = tuple(settings[name])
        self.config = MarketModelConfig(**settings)
        _check_config(self.config)
        self._columns: list[str] | None = None
        self.models_: list[QuantileNetwork] = []
        self.variance_ratios_: np.ndarray | None = None
        self.assets_: dict[str, int] = {}
        self.chosen_: dict[str, Any] = {}
        self.search_scores_: list[tuple[dict[str, float], float, int]] = []

    # ---- fit ------------------------------------------------------------------------------------

    def fit(self, frame: pd.DataFrame) -> "CrossAssetForecaster":
        """Search on the fit rows' validation tail, then train the winner on every fit row."""
        config = self.config
        _, self._columns = _begin_fit(self, frame)
        require_ohlc(frame, _NEEDS_CANDLES)
        parts = split_assets(frame)
        self.assets_ = {asset: index for index, asset in enumerate(parts, start=1)}
        examples = _examples(parts, self.assets_, config.horizon)
        levels = config.levels()
        init_key, search_key, final_key = jax.random.split(jax.random.key(config.seed), 3)
        # The H origins before the split are dropped: their targets reach into the validation rows.
        cut = np.floor((1.0 - config.validation_fraction) * (examples.rows - config.horizon))
        fit_part = examples.take(examples.origin < cut - config.horizon)
        held_out = examples.take(examples.origin >= cut)
        if config.validation_fraction == 0 or len(held_out.features) == 0 or len(fit_part.features) == 0:
            raise ValueError(
                "CrossAssetForecaster.fit: too few rows for a validation split "
                f"(validation_fraction={config.validation_fraction}); give more rows or a larger fraction"
            )
        grid = list(itertools.product(config.widths, config.learning_rates, config.weight_decays, config.loss_units))
        scores = []
        ratios = fit_part.variance_ratios(len(parts))
        fit_part, held_out = fit_part.rescaled(ratios), held_out.rescaled(ratios)
        standardise = _Standardiser.fitted(fit_part.features, config.clip)
        held_out_inputs = standardise(held_out.features)

        def score(model: QuantileNetwork) -> float:
            return _return_pinball(
                [model], held_out_inputs, held_out.assets, held_out.scales, held_out.targets, levels
            )

        for width, rate, decay, units in grid:
            model = QuantileNetwork(len(FEATURE_NAMES), len(parts), width, config, key=init_key)
            # Step 0, the untrained head (N(0, s^2 h), the HAR scale), is a candidate too.
            trace = [(score(model), 0)]
            for chunk, model in enumerate(self._train(model, fit_part, standardise, rate, decay, units, search_key)):
                trace.append((score(model), (chunk + 1) * config.eval_every))
            best, steps = min(trace)  # the fewest steps among ties
            scores.append(({"width": width, "learning_rate": rate, "weight_decay": decay, "loss_units": units},
                           best, steps))
        setting, best, steps = min(scores, key=lambda entry: entry[1])
        self.search_scores_ = scores
        self.chosen_ = {**setting, "steps": steps, "validation_pinball": best}
        self._standardise = _Standardiser.fitted(examples.features, config.clip)
        self.variance_ratios_ = examples.variance_ratios(len(parts))
        examples = examples.rescaled(self.variance_ratios_)
        self.models_ = []
        for member_init, member_key in zip(jax.random.split(init_key, config.ensemble),
                                           jax.random.split(final_key, config.ensemble)):
            model = QuantileNetwork(len(FEATURE_NAMES), len(parts), setting["width"], config, key=member_init)
            for model in self._train(model, examples, self._standardise, setting["learning_rate"],
                                     setting["weight_decay"], setting["loss_units"], member_key, steps=steps):
                pass
            self.models_.append(model)
        return self

    def _train(self, model, examples: _Examples, standardise: _Standardiser, learning_rate: float,
               weight_decay: float, loss_units: str, key: PRNGKeyArray, steps: int | None = None):
        """Yield the model after every ``eval_every`` AdamW steps, up to ``steps`` (default
        ``max_steps``)."""
        config = self.config
        steps = config.max_steps if steps is None else steps
        horizon_unit = np.sqrt(np.arange(1, config.horizon + 1))[None, :]
        z_targets = examples.targets / (examples.scales[:, None] * horizon_unit)  # (N, H)
        data = (
            jnp.asarray(standardise(examples.features)),
            jnp.asarray(examples.assets, jnp.int32),
            jnp.asarray(z_targets, jnp.float32),
        )
        # "returns": each origin's loss in log-return units, as the CRPS of prices weighs it, with
        # the weights averaging 1 so the learning rate means the same under either choice.
        weights = examples.scales / examples.scales.mean() if loss_units == "returns" else np.ones(len(examples.scales))
        opt_state = _adam().init(eqx.filter(model, eqx.is_array))
        levels = jnp.asarray(config.levels(), jnp.float32)
        keys = jax.random.split(key, steps)
        for start in range(0, steps, config.eval_every):
            model, opt_state = _train_chunk(
                model, opt_state, data, levels, jnp.asarray(weights, jnp.float32), jnp.float32(learning_rate),
                jnp.float32(weight_decay), keys[start : start + config.eval_every],
                min(config.batch_size, len(examples.features)), config.asset_dropout,
            )
            yield model

    # ---- forecast -------------------------------------------------------------------------------

    def quantiles(self, context: pd.DataFrame, horizon: int) -> tuple[np.ndarray, str | None]:
        """Quantiles ``(H, Q)`` of the cumulative log returns ``ln(P_{T+h} / P_T)`` at
        ``config.levels()``, and the context's asset."""
        if not self.models_:
            raise RuntimeError("CrossAssetForecaster.forecast was called before fit")
        require_int(horizon, "horizon", 1)
        if horizon > self.config.horizon:
            raise ValueError(
                f"market_model was fitted for horizon={self.config.horizon}; asked for {horizon}: "
                f"fit it with horizon={horizon} (model option) or more"
            )
        values, asset = _read_context(
            self, context, horizon, 1, _CONTEXT_ROWS, f"22-day averages need {_CONTEXT_ROWS} rows"
        )
        require_ohlc(context, _NEEDS_CANDLES)
        if "volume" not in context.columns:
            raise ValueError("context lacks volume: market_model reads whole candles")
        features, scale = market_inputs(context.iloc[-_READ_ROWS:].reset_index(drop=True))
        last = features[-1]
        if not np.all(np.isfinite(last)):
            raise ValueError("the context's last rows give non-finite inputs; validate the frame first")
        index = self.assets_.get(asset, 0) if asset is not None else 0
        z = _predict(self.models_, self._standardise(last[None, :]), np.array([index]))
        unit = scale[-1] * np.sqrt(self.variance_ratios_[index] * np.arange(1, horizon + 1))  # (H,)
        return z[0, :horizon] * unit[:, None], asset

    def forecast(
        self, context: pd.DataFrame, horizon: int, num_samples: int, *, key: Any = None
    ) -> Forecast:
        """Price paths ``(S, H, 1)``: ``P_T exp(q_h(u))``, one uniform ``u`` per path."""
        require_key(key, "CrossAssetForecaster.forecast")
        require_int(num_samples, "num_samples", 1)
        quantiles, asset = self.quantiles(context, horizon)
        uniforms = numpy_rng(key).random(num_samples)
        returns = quantile_function(quantiles, self.config.levels(), uniforms)  # (S, H)
        last = float(context[self._columns[0]].iloc[-1])
        return Forecast(last * np.exp(returns)[:, :, None], self._columns, asset=asset)


def quantile_function(quantiles: np.ndarray, levels: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """Each step's quantile function at ``uniforms``: ``(S, H)`` from quantiles ``(H, Q)``.

    Linear between the grid ``levels`` ``(Q,)``; beyond the first and last level, the line through
    the two outermost points continued (a bounded tail, as the grid says nothing further out).
    """
    below, above = uniforms < levels[0], uniforms > levels[-1]
    inner = np.stack([np.interp(uniforms, levels, q) for q in quantiles], axis=1)  # (S, H)
    low_slope = (quantiles[:, 1] - quantiles[:, 0]) / (levels[1] - levels[0])  # (H,)
    high_slope = (quantiles[:, -1] - quantiles[:, -2]) / (levels[-1] - levels[-2])
    low_tail = quantiles[None, :, 0] + (uniforms[:, None] - levels[0]) * low_slope[None, :]  # (S, H)
    high_tail = quantiles[None, :, -1] + (uniforms[:, None] - levels[-1]) * high_slope[None, :]
    return np.where(above[:, None], high_tail, np.where(below[:, None], low_tail, inner))
