"""Quantile distributions of returns: the QR-DQN loss, the quantile midpoints, and their CVaR.

A return distribution is represented by ``N`` quantile atoms ``theta_1 .. theta_N``, each of mass
``1/N``, placed at the quantile midpoints ``tau_i = (2i + 1) / 2N`` (Dabney et al. 2018, AAAI,
"Distributional Reinforcement Learning with Quantile Regression", section 3, lemma 2: the midpoints
minimise the 1-Wasserstein distance to the true distribution).

* :func:`quantile_huber_loss` is the quantile Huber loss of Dabney et al. 2018, section 3.3 (eq. 10):
  every predicted atom against every target sample, with the asymmetric weight
  ``|tau_i - 1{u < 0}|`` on the Huber loss of the error ``u = target_j - predicted_i`` (Huber 1964).
* :func:`cvar_from_quantiles` is the conditional value at risk (the expected shortfall, the mean of
  the worst ``alpha`` fraction of outcomes; Rockafellar & Uryasev 2000) of the atoms.

Dimension letters: N predicted quantiles, M target samples (usually the N atoms of the target
network), ``...`` any leading batch axes.

The loss follows ``rlax.quantile_regression_loss`` term for term (same sign of ``u``, no division
by ``kappa``, mean over targets and sum over predicted quantiles) and the tests compare the two. We
keep our own because rlax is a test-only reference: importing it pulls in distrax,
tensorflow-probability and chex for ten lines of arithmetic.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

__all__ = ["cvar_from_quantiles", "quantile_huber_loss", "quantile_midpoints"]


def quantile_midpoints(n: int) -> Float[Array, " n"]:
    """The quantile levels ``tau_i = (2i + 1) / 2n``, ``i = 0 .. n-1`` (Dabney et al. 2018, lemma 2)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return (2.0 * jnp.arange(n, dtype=jnp.float32) + 1.0) / (2.0 * n)


def quantile_huber_loss(
    predicted: Float[Array, " N"],
    target: Float[Array, " M"],
    taus: Float[Array, " N"],
    kappa: float | Float[Array, ""] = 1.0,
) -> Float[Array, ""]:
    """The quantile (Huber) regression loss of ``N`` predicted quantiles against ``M`` target samples.

    ``sum_i mean_j |tau_i - 1{u_ij < 0}| * L_kappa(u_ij)`` with ``u_ij = target_j - predicted_i``
    and ``L_kappa(u) = u^2 / 2`` for ``|u| <= kappa``, ``kappa (|u| - kappa / 2)`` beyond (Dabney et
    al. 2018, eq. 10, without its division by ``kappa``, as rlax does). ``kappa = 0`` gives the pure
    quantile (pinball) loss ``|tau - 1{u < 0}| |u|``.

    The indicator carries no gradient. The target does, if the caller lets it: Q-learning passes a
    target built from a frozen network under ``jax.lax.stop_gradient``.

    Args:
        predicted: the predicted quantile values ``theta_i``.
        target: samples (or atoms, equally weighted) of the target distribution.
        taus: the quantile level of each predicted value, in (0, 1).
        kappa: the Huber threshold (in return units), ``>= 0``.

    Returns:
        The scalar loss.
    """
    u = target[None, :] - predicted[:, None]  # (N, M)
    below = jax.lax.stop_gradient((u < 0).astype(u.dtype))
    weight = jnp.abs(taus[:, None] - below)
    abs_u = jnp.abs(u)
    # Splitting |u| into its clipped and excess parts keeps the gradient single at |u| = kappa.
    quadratic = jnp.minimum(abs_u, kappa)
    huber = 0.5 * quadratic**2 + kappa * (abs_u - quadratic)
    per_pair = weight * jnp.where(kappa > 0, huber, abs_u)
    return jnp.sum(jnp.mean(per_pair, axis=-1))


def cvar_from_quantiles(
    quantiles: Float[Array, "... N"], alpha: float | Float[Array, ""]
) -> Float[Array, "..."]:
    """The lower-tail CVaR at level ``alpha`` of ``N`` equally weighted quantile atoms.

    With the atoms sorted, ``theta_(1) <= .. <= theta_(N)``, each of mass ``1/N``, the CVaR is the
    mean of the distribution restricted to its lowest ``alpha`` of probability mass (Rockafellar &
    Uryasev 2000, for a discrete distribution):

        CVaR_alpha = (1 / (alpha N)) * sum_i min(1, max(0, alpha N - (i - 1))) * theta_(i)

    i.e. the lowest ``floor(alpha N)`` atoms count in full and the next one for the fraction
    ``alpha N - floor(alpha N)`` of its mass. When ``alpha N`` is an integer this is the mean of
    the lowest ``alpha N`` atoms (``ceil(alpha N)`` atoms in full would overweight the partial atom
    otherwise); ``alpha = 1`` gives the mean of all atoms; ``alpha -> 0`` the lowest atom. Larger
    values are better (returns, not losses).

    ``alpha`` may be a traced scalar (the weights are a mask, not a slice), so one compiled
    function serves every risk level.

    Args:
        quantiles: quantile atoms along the last axis, in any order.
        alpha: the tail mass, in (0, 1].

    Returns:
        The CVaR of each distribution, the shape of ``quantiles`` without its last axis.
    """
    if isinstance(alpha, (int, float)) and not 0 < alpha <= 1:
        raise ValueError(f"alpha must lie in (0, 1], got {alpha}")
    n = quantiles.shape[-1]
    ordered = jnp.sort(quantiles, axis=-1)
    mass = jnp.asarray(alpha, ordered.dtype) * n  # alpha N, in atoms
    weights = jnp.clip(mass - jnp.arange(n, dtype=ordered.dtype), 0.0, 1.0)  # (N,)
    return jnp.sum(ordered * weights.reshape((1,) * (ordered.ndim - 1) + (n,)), axis=-1) / mass
