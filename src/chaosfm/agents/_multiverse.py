"""Multiverse Crossing: how much do plausible futures depend on a nudge to the present?

From one context embedding ``z`` (on the unit sphere), ``M`` universes are made by perturbing it
in the tangent plane of the sphere and renormalising (:func:`tangent_perturb`). The JEPA's flow
head draws ``N`` futures for each, and each future is rolled on by feeding it back as the next
condition, ``K`` times (``cfm_horizon`` steps each). Three scores summarise the cloud:

* **convergence** in [0, 1]: ``W / (W + B)`` with ``W`` the mean within-universe variance and ``B``
  the variance of the universe means (a one-way ANOVA split of the total spread). 1: the nudges do
  not matter, the futures agree across universes; 0: each universe has its own future.
* **bifurcation index**: ``exp(H)`` of the normalised eigenvalues ``p`` of the samples' Gram
  matrix (``H = -sum p log p``): the effective number of directions (regimes) the futures split
  into; 1 for a single regime.
* **Lyapunov proxy**: the least-squares slope of ``log`` RMS spread against the rollout step (per
  ``cfm_horizon`` candles), from the initial perturbation through the ``K`` rollout steps; > 0 when
  nudges grow.

:func:`confidence_filter` (also exported as ``filter``) keeps the origins whose convergence is at
least a threshold. ``chaosfm mvx`` computes the scores over time for a dataset and a pretrain run.

Dimension letters: K rollout steps, M universes, N samples per universe, E embedding width.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jaxtyping import Array, Float, PRNGKeyArray

from chaosfm.models import l2_normalize

__all__ = [
    "CrossingScores",
    "confidence_filter",
    "crossing_scores",
    "multiverse",
    "tangent_perturb",
]


@eqx.filter_jit
def tangent_perturb(
    z: Float[Array, " dim"], universes: int, scale: float, *, key: PRNGKeyArray
) -> Float[Array, "universes dim"]:
    """``universes`` points near ``z`` on the unit sphere: Gaussian noise of std ``scale`` with its
    component along ``z`` removed (the tangent plane), added to ``z``, then renormalised."""
    z = l2_normalize(z)
    noise = scale * jax.random.normal(key, (universes, z.shape[-1]), jnp.float32)
    tangent = noise - (noise @ z)[:, None] * z[None, :]
    return l2_normalize(z[None, :] + tangent)


def multiverse(
    model: Any,
    z: Float[Array, " dim"],
    *,
    key: PRNGKeyArray,
    universes: int = 8,
    samples: int = 16,
    steps: int = 3,
    scale: float = 0.05,
) -> tuple[Float[Array, "universes dim"], Float[Array, "steps universes samples dim"]]:
    """The perturbed contexts ``(M, E)`` and the rolled-out futures ``(K, M, N, E)`` of a JEPA with a flow head."""
    if model.flow is None:
        raise ValueError("Multiverse Crossing needs a JEPA with a flow head (cfm_weight > 0)")
    return _multiverse(model, z, key, universes, samples, steps, scale)


@eqx.filter_jit
def _multiverse(model, z, key, universes: int, samples: int, steps: int, scale: float):
    perturb_key, first_key, roll_key = jax.random.split(key, 3)
    starts = tangent_perturb(z, universes, scale, key=perturb_key)
    keys = jax.random.split(first_key, universes)
    first = jax.vmap(lambda c, k: model.sample_future(c, samples, key=k))(starts, keys)  # (M, N, E)

    def step(current, step_key):
        flat = current.reshape(universes * samples, -1)
        drawn = jax.vmap(lambda c, k: model.sample_future(c, 1, key=k)[0])(
            flat, jax.random.split(step_key, flat.shape[0])
        )
        nxt = drawn.reshape(current.shape)
        return nxt, nxt

    _, rest = jax.lax.scan(step, first, jax.random.split(roll_key, steps - 1))
    return starts, jnp.concatenate([first[None], rest])


class CrossingScores(NamedTuple):
    """The three Multiverse Crossing scores of one origin (or arrays of them over origins)."""

    convergence: Any
    bifurcation: Any
    lyapunov: Any


def crossing_scores(
    starts: np.ndarray, futures: np.ndarray
) -> CrossingScores:
    """Scores from perturbed contexts ``(M, E)`` and futures ``(K, M, N, E)`` (see the module docstring).

    Convergence and bifurcation use the first rollout step; the Lyapunov proxy uses them all.
    """
    starts, futures = np.asarray(starts, np.float64), np.asarray(futures, np.float64)
    first = futures[0]  # (M, N, E)
    means = first.mean(axis=1)  # (M, E)
    within = float(np.mean(np.sum((first - means[:, None]) ** 2, axis=-1)))
    between = float(np.mean(np.sum((means - means.mean(axis=0)) ** 2, axis=-1)))
    convergence = 1.0 if within + between <= 1e-12 else within / (within + between)
    cloud = first.reshape(-1, first.shape[-1])
    # The Gram matrix X X^T / n has the nonzero eigenvalues of X^T X / n, which is E x E.
    eigen = np.clip(np.linalg.eigvalsh(cloud.T @ cloud / cloud.shape[0]), 0.0, None)
    p = eigen / eigen.sum()
    entropy = -float(np.sum(p[p > 0] * np.log(p[p > 0])))
    spread = [np.sqrt(np.mean(np.sum((starts - starts.mean(axis=0)) ** 2, axis=-1)))]
    for cloud_k in futures:
        flat = cloud_k.reshape(-1, cloud_k.shape[-1])
        spread.append(np.sqrt(np.mean(np.sum((flat - flat.mean(axis=0)) ** 2, axis=-1))))
    logs = np.log(np.maximum(spread, 1e-12))
    steps = np.arange(len(logs), dtype=np.float64)
    slope = float(np.polyfit(steps, logs, 1)[0])
    return CrossingScores(convergence, math.exp(entropy), slope)


def confidence_filter(scores: CrossingScores | Any, threshold: float) -> np.ndarray:
    """Boolean mask of origins to act on: convergence at or above ``threshold`` (in [0, 1]).

    Args:
        scores: :class:`CrossingScores` (of arrays), a frame with a ``convergence`` column, or
            convergence values.
        threshold: minimum convergence.
    """
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold must lie in [0, 1], got {threshold}")
    if isinstance(scores, CrossingScores):
        values = scores.convergence
    elif isinstance(scores, pd.DataFrame):
        values = scores["convergence"]
    else:
        values = scores
    return np.asarray(values, np.float64) >= threshold


filter = confidence_filter  # noqa: A001 - the name the issue and the docs use
