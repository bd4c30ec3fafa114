"""Adaptive conformal inference (Gibbs & Candès 2021) as init/update pure functions over a
NamedTuple state, and its aggregation over step sizes (AgACI, Zaffran et al. 2022).

For each quantile level ``tau`` of a grid, horizon step and column, the level actually used moves
by ``gamma * (1{y > q} - (1 - tau))`` after each observation: a run of misses widens the interval
and a run of hits narrows it. Several ``gamma`` run side by side; their quantiles are averaged by
exponential weights on their pinball losses. :class:`~chaosfm.forecasters.ConformalForecaster`
uses them on top of split conformal; ``chaosfm stream`` on the predictor's own samples
(:func:`aci_samples`).

``mapie`` has ACI only around scikit-learn regressors' point predictions with its own
``partial_fit`` loop, and ``crepes`` and ``puncc`` have no adaptive level: none takes a quantile
forecast with multi-step, delayed feedback, so these few functions are written here.

Dimension letters: S samples, H horizon steps, C channels, L quantile levels, G step sizes.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

ACI_LEVELS = tuple(round(0.05 * i, 2) for i in range(1, 20))
"""The quantile levels adaptive conformal inference tracks (0.05 ... 0.95)."""
AGACI_GAMMAS = (0.001, 0.005, 0.02, 0.05)
"""AgACI's experts: Zaffran et al. (2022) aggregate a grid of this range."""


class ACIState(NamedTuple):
    """Adaptive levels and expert weights of one asset.

    Attributes:
        levels: ``(G, H, C, L)`` the level each expert uses for each nominal level.
        loss: ``(G, H, C, L)`` each expert's cumulative pinball loss (on the z scale).
        updates: ``(H,)`` observations seen per step (the aggregation's learning rate uses it).
    """

    levels: np.ndarray
    loss: np.ndarray
    updates: np.ndarray


def aci_init(gammas: tuple[float, ...], horizon: int, channels: int, levels: tuple[float, ...] = ACI_LEVELS) -> ACIState:
    """Every expert starts at the nominal levels."""
    shape = (len(gammas), horizon, channels, len(levels))
    return ACIState(
        levels=np.broadcast_to(np.asarray(levels, np.float64), shape).copy(),
        loss=np.zeros(shape),
        updates=np.zeros(horizon, np.int64),
    )


def aci_weights(state: ACIState) -> np.ndarray:
    """``(G, H, C, L)`` exponential weights of the experts from their cumulative losses.

    The learning rate ``sqrt(8 ln G / t)`` is the anytime rate of exponentially weighted
    averaging for losses in [0, 1] (Cesa-Bianchi & Lugosi 2006, thm 2.3); the z-scale pinball
    losses are clipped to [0, 1] in :func:`aci_update` to keep that bound.
    """
    experts = state.levels.shape[0]
    if experts == 1:
        return np.ones_like(state.loss)
    rate = np.sqrt(8.0 * math.log(experts) / np.maximum(state.updates, 1))[None, :, None, None]
    logits = -rate * state.loss
    logits -= logits.max(axis=0, keepdims=True)
    weights = np.exp(logits)
    return weights / weights.sum(axis=0, keepdims=True)


def aci_update(
    state: ACIState,
    step: int,
    observed: np.ndarray,
    quantiles: np.ndarray,
    spread: np.ndarray,
    gammas: tuple[float, ...],
    levels: tuple[float, ...] = ACI_LEVELS,
) -> ACIState:
    """One observation of horizon step ``step`` (0-based): every expert's levels move.

    Args:
        state: the asset's state.
        step: which horizon step ``observed`` is the target of.
        observed: ``(C,)`` the observed values.
        quantiles: ``(G, C, L)`` the quantiles each expert forecast for that step at its levels.
        spread: ``(C,)`` the forecast's spread, to put the pinball loss on the z scale.
        gammas: ``(G,)`` the experts' step sizes.
        levels: ``(L,)`` the nominal levels.

    Returns:
        The new state (the inputs are not modified).
    """
    tau = np.asarray(levels, np.float64)[None, None, :]
    exceed = (observed[None, :, None] > quantiles).astype(np.float64)  # (G, C, L)
    new_levels = state.levels.copy()
    new_levels[:, step] += np.asarray(gammas, np.float64)[:, None, None] * (exceed - (1.0 - tau))
    residual = (observed[None, :, None] - quantiles) / spread[None, :, None]
    pinball = np.maximum(tau * residual, (tau - 1.0) * residual)
    new_loss = state.loss.copy()
    new_loss[:, step] += np.clip(pinball, 0.0, 1.0)
    updates = state.updates.copy()
    updates[step] += 1
    return ACIState(new_levels, new_loss, updates)


def usable_levels(levels: np.ndarray) -> np.ndarray:
    """Adapted levels ``(..., L)`` as quantile levels: clipped to [0, 1] and made non-decreasing
    along the last axis (ACI's levels may leave [0, 1] or cross; a quantile function may not)."""
    return np.maximum.accumulate(np.clip(np.asarray(levels, np.float64), 0.0, 1.0), axis=-1)


def aci_samples(samples: np.ndarray, levels: np.ndarray, nominal: tuple[float, ...] = ACI_LEVELS
                ) -> tuple[np.ndarray, np.ndarray]:
    """A model's own samples moved to adaptive levels: for a model without a calibration set.

    Each sample at nominal level ``u`` (its rank among the samples) is replaced by the samples'
    quantile at the adapted level ``a(u)``, ``a`` interpolating ``nominal -> levels`` (0 and 1
    fixed, clipped to [0, 1], made non-decreasing). The interval can then widen up to the
    samples' range, not beyond it.

    Args:
        samples: ``(S,)`` one step's samples.
        levels: ``(L,)`` the adapted levels of the ``nominal`` ones (``ACIState.levels[0, h, c]``).
        nominal: ``(L,)`` the nominal levels.

    Returns:
        ``(S,)`` the samples at their adapted levels (in the input's order) and ``(L,)`` the
        quantiles at the adapted levels, the ones the next observation's miss is judged by.
    """
    adapted = usable_levels(levels)
    ranks = np.argsort(np.argsort(samples, kind="stable"), kind="stable")
    u = (ranks + 0.5) / len(samples)
    at = np.interp(u, np.concatenate([[0.0], nominal, [1.0]]), np.concatenate([[0.0], adapted, [1.0]]))
    return np.quantile(samples, at), np.quantile(samples, adapted)
