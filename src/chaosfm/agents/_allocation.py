"""Soft cross-sectional allocation: portfolio weights from per-asset scores, with a set net
exposure and gross leverage.

A score ranks an asset: for a QR-DQN critic, the CVaR of going long minus the CVaR of going short.
:func:`soft_allocation` turns ``K`` scores into ``K`` weights ``w`` with ``sum(w) = n`` (the net
exposure, e.g. 0 for market neutral, 1 for fully invested long-only) and ``sum(|w|) = g`` (the gross
leverage), ``|n| <= g``. The construction, for scores ``s`` and temperature ``T``:

1. ``p = softmax(s / T)`` and ``q = softmax(-s / T)``: how much each asset deserves of a long
   and of a short leg. ``t = p - q`` sums to zero and orders the assets as ``s`` does (``p_k``
   rises and ``q_k`` falls with ``s_k``).
2. An asset with ``t_k > 0`` joins the long leg, one with ``t_k < 0`` the short leg, each in
   proportion to ``|t_k|``: with ``Z = sum(max(t, 0)) = sum(max(-t, 0))``,

       w_k = L * max(t_k, 0) / Z - S * max(-t_k, 0) / Z,   L = (g + n) / 2,  S = (g - n) / 2,

   so ``sum(w) = L - S = n`` and, as no asset is in both legs, ``sum(|w|) = L + S = g`` exactly.

Weighting a long leg by ``p`` and a short leg by ``q`` directly would let an asset sit in both legs
and net out, leaving the gross below ``g``; the sign split of step 2 is what makes both sums hold.
As ``T -> 0`` the long leg is all in the best asset and the short leg all in the worst; as
``T -> inf`` the weights become proportional to the centred scores. Weights are non-decreasing in
the score (strictly, within a leg). When every score is equal (or ``K = 1``) there is no ranking
and the weights are ``n / K`` each, with gross ``|n|``.

Dimension letters: K assets. Vmap over portfolios (a leading axis of score vectors).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

__all__ = ["soft_allocation"]


def _concrete(value) -> bool:
    return not isinstance(value, jax.core.Tracer)


def soft_allocation(
    scores: Float[Array, " K"],
    *,
    temperature: float,
    net_exposure: float,
    gross_leverage: float,
) -> Float[Array, " K"]:
    """Weights with ``sum(w) = net_exposure`` and ``sum(|w|) = gross_leverage`` from per-asset
    scores (the construction is in the module docstring).

    Args:
        scores: one score per asset; higher is better.
        temperature: the softmax temperature, in score units, ``> 0``; lower concentrates the legs
            on the extreme assets.
        net_exposure: ``sum(w)``.
        gross_leverage: ``sum(|w|)``, at least ``|net_exposure|``.

    Returns:
        The portfolio weights.

    Raises:
        ValueError: ``|net_exposure| > gross_leverage`` or ``temperature <= 0`` (checked when the
            values are concrete; traced values cannot be checked).
    """
    if _concrete(net_exposure) and _concrete(gross_leverage) and abs(net_exposure) > gross_leverage:
        raise ValueError(
            f"infeasible allocation: |net_exposure| = {abs(net_exposure)} exceeds gross_leverage = {gross_leverage}"
        )
    if _concrete(temperature) and temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    scores = jnp.asarray(scores, jnp.float32)
    tilt = jax.nn.softmax(scores / temperature) - jax.nn.softmax(-scores / temperature)  # (K,)
    long_part, short_part = jnp.maximum(tilt, 0.0), jnp.maximum(-tilt, 0.0)
    # Each leg is normalised by its own sum (equal to Z up to rounding) so that each sums exactly.
    long_total, short_total = jnp.sum(long_part), jnp.sum(short_part)
    ranked = jnp.minimum(long_total, short_total) > 1e-12
    # Safe denominators: no NaN (value or gradient) through the unranked branch.
    long_total = jnp.where(ranked, long_total, 1.0)
    short_total = jnp.where(ranked, short_total, 1.0)
    long_leg, short_leg = 0.5 * (gross_leverage + net_exposure), 0.5 * (gross_leverage - net_exposure)
    tilted = long_leg * long_part / long_total - short_leg * short_part / short_total
    flat = jnp.full_like(scores, net_exposure / scores.shape[0])
    return jnp.where(ranked, tilted, flat)
