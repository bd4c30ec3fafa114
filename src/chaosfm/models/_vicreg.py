"""The self-supervised pieces of the JEPA: VICReg terms, the EMA target update and block masks.

VICReg (Bardes, Ponce & LeCun 2022, §3.1) keeps embeddings from collapsing with three terms:

* invariance ``s(z, z') = mean ||z - z'||²``: the predictor must hit the target embedding;
* variance ``v(Z) = mean_j max(0, gamma - sqrt(Var(Z_j) + eps))``: a hinge on each dimension's
  standard deviation across the batch;
* covariance ``c(Z) = sum_{i != j} C(Z)_{ij}² / d``: off-diagonal covariances pushed to zero.

All three are computed in float32 (the covariance sums d² products). On the unit sphere the
per-dimension variances sum to at most 1, so the variance target is ``gamma = target_scale /
sqrt(d)``, a fraction of the isotropic value ``1 / sqrt(d)``, rather than VICReg's 1.

Block masks (I-JEPA, Assran et al. 2023, §3, adapted to time): a window of ``L`` steps is cut at
``c``; the context is ``[0, c)`` and ``n_blocks`` target spans lie in the future ``[c, L)``.
Nothing at or after ``c`` reaches the context encoder.

Dimension letters: B batch (rows), D embedding width, L window length, K target blocks.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, PRNGKeyArray

__all__ = [
    "BlockMasks",
    "block_masks",
    "ema_update",
    "vicreg_covariance",
    "vicreg_invariance",
    "vicreg_variance",
    "weighted_moments",
]

_F32 = jnp.float32


def weighted_moments(
    z: Float[Array, "rows dim"], weight: Float[Array, " rows"] | None = None
) -> tuple[Float[Array, " dim"], Float[Array, "dim dim"]]:
    """Mean and (unbiased, frequency-weighted) covariance of the rows of ``z``, in float32.

    Rows with weight 0 do not count; ``weight=None`` counts every row once.
    """
    z = z.astype(_F32)
    w = jnp.ones(z.shape[0], _F32) if weight is None else weight.astype(_F32)
    total = jnp.sum(w)
    mean = jnp.sum(w[:, None] * z, axis=0) / jnp.maximum(total, 1.0)
    centred = (z - mean[None, :]) * jnp.sqrt(w)[:, None]
    cov = centred.T @ centred / jnp.maximum(total - 1.0, 1.0)
    return mean, cov


def vicreg_invariance(
    prediction: Float[Array, "rows dim"],
    target: Float[Array, "rows dim"],
    weight: Float[Array, " rows"] | None = None,
) -> Float[Array, ""]:
    """Mean squared distance between paired rows (over rows with nonzero weight)."""
    squared = jnp.sum((prediction.astype(_F32) - target.astype(_F32)) ** 2, axis=-1)
    if weight is None:
        return jnp.mean(squared)
    w = weight.astype(_F32)
    return jnp.sum(w * squared) / jnp.maximum(jnp.sum(w), 1.0)


def vicreg_variance(
    z: Float[Array, "rows dim"],
    target_std: float,
    weight: Float[Array, " rows"] | None = None,
    eps: float = 1e-4,
) -> Float[Array, ""]:
    """Hinge ``mean_j relu(target_std - sqrt(Var(z_j) + eps))`` over dimensions."""
    _, cov = weighted_moments(z, weight)
    std = jnp.sqrt(jnp.diagonal(cov) + eps)
    return jnp.mean(jax.nn.relu(target_std - std))


def vicreg_covariance(
    z: Float[Array, "rows dim"], weight: Float[Array, " rows"] | None = None
) -> Float[Array, ""]:
    """``sum_{i != j} C_ij² / d`` of the covariance matrix ``C`` of the rows, in float32."""
    _, cov = weighted_moments(z, weight)
    off = cov - jnp.diag(jnp.diagonal(cov))
    return jnp.sum(off * off) / z.shape[-1]


def ema_update(target: Any, online: Any, decay: float | Float[Array, ""]) -> Any:
    """``decay * target + (1 - decay) * online``, leaf by leaf (arrays only; other leaves from target)."""

    def mix(t, o):
        if isinstance(t, jax.Array) and jnp.issubdtype(t.dtype, jnp.inexact):
            return (decay * t.astype(_F32) + (1.0 - decay) * o.astype(_F32)).astype(t.dtype)
        return t

    return jax.tree_util.tree_map(mix, target, online)


class BlockMasks(NamedTuple):
    """Which steps of a window the context sees and which the predictor must predict.

    Attributes:
        context: ``(L,)`` True on ``[0, cut)``.
        targets: ``(K, L)`` True on each target span; every span lies in ``[cut, L)``.
        cut: the first hidden step (int32 scalar).
    """

    context: Bool[Array, " length"]
    targets: Bool[Array, "blocks length"]
    cut: Array


def block_masks(
    key: PRNGKeyArray,
    length: int,
    *,
    n_blocks: int = 2,
    min_span: int = 4,
    max_span: int = 16,
    min_future: int = 8,
    max_future: int = 24,
) -> BlockMasks:
    """Random future-block masks for one window (jit- and vmap-friendly: shapes are static).

    Args:
        key: PRNG key.
        length: window length ``L``.
        n_blocks: target spans ``K``.
        min_span, max_span: span lengths, inclusive (clipped to the future's length).
        min_future, max_future: length of the hidden future ``L - cut``, inclusive.

    Returns:
        :class:`BlockMasks`.
    """
    if not 1 <= min_future <= max_future < length:
        raise ValueError(
            f"need 1 <= min_future ({min_future}) <= max_future ({max_future}) < length ({length})"
        )
    if not 1 <= min_span <= max_span:
        raise ValueError(f"need 1 <= min_span ({min_span}) <= max_span ({max_span})")
    cut_key, span_key, start_key = jax.random.split(key, 3)
    future = jax.random.randint(cut_key, (), min_future, max_future + 1)
    cut = length - future
    spans = jnp.minimum(jax.random.randint(span_key, (n_blocks,), min_span, max_span + 1), future)
    # Start of each span, uniform over [cut, length - span].
    room = (length - spans - cut + 1).astype(_F32)
    starts = cut + jnp.floor(jax.random.uniform(start_key, (n_blocks,)) * room).astype(jnp.int32)
    steps = jnp.arange(length)
    targets = (steps[None, :] >= starts[:, None]) & (steps[None, :] < (starts + spans)[:, None])
    return BlockMasks(context=steps < cut, targets=targets, cut=cut.astype(jnp.int32))
