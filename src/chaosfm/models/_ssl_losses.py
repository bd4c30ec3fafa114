"""Self-supervised losses beside VICReg: Barlow Twins and cross-resolution consistency.

**Barlow Twins** (Zbontar et al. 2021, §2, eq. 1). Two views ``A, B`` of ``N`` paired rows are each
standardised per dimension across the rows (the paper's batch normalisation without affine
parameters: mean 0, biased variance 1), and their cross-correlation
``C_ij = sum_n a_ni b_nj / N`` is pulled towards the identity:

    L_BT = sum_i (1 - C_ii)² + lambda * sum_{i != j} C_ij².

The diagonal makes the two views agree dimension by dimension; the off-diagonal term
(``lambda``, 5e-3 in the paper for 8192 dimensions) decorrelates the dimensions, which keeps the
embeddings from collapsing without negatives. With row weights (0/1 masks) the mean, variance and
``C`` are frequency-weighted averages over the rows that count.

**Cross-resolution consistency.** A window ``x`` of ``L`` steps and the same period sampled at
half the rate, ``D2(x)`` of ``floor(L / 2)`` steps, should embed alike. ``D2`` averages
non-overlapping pairs of steps ending at the window's last step (a two-step mean pool; with an odd
``L`` the first step is dropped, so both views end at the same time). With ``f`` an encoder giving
one embedding per step and the pooled embedding ``p(e) = normalise(mean_t e_t)`` on the unit
sphere, the loss over a batch of ``B`` windows is

    L_xres = mean_b || p(f(D2(x_b))) - p(f'(x_b)) ||²,

in ``[0, 4]``. In the JEPA, ``f`` is the context encoder and ``f'`` the EMA target encoder with its
gradient stopped (its embeddings of the full window are computed for the JEPA targets anyway), so
the coarse view is trained towards the fine one, as in the JEPA's own prediction.

All sums are float32. Dimension letters: N rows, D embedding width, B batch, T time, F features.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

__all__ = ["barlow_twins_loss", "cross_resolution_loss", "downsample_pairs", "pooled_embedding"]

_F32 = jnp.float32


def _standardise(z: Float[Array, "rows dim"], w: Float[Array, " rows"], eps: float) -> Float[Array, "rows dim"]:
    """Per-dimension ``(z - mean) / sqrt(var + eps)`` with weighted mean and biased variance."""
    total = jnp.maximum(jnp.sum(w), 1.0)
    mean = jnp.sum(w[:, None] * z, axis=0) / total
    centred = z - mean[None, :]
    var = jnp.sum(w[:, None] * centred * centred, axis=0) / total
    return centred / jnp.sqrt(var + eps)[None, :]


def barlow_twins_loss(
    a: Float[Array, "rows dim"],
    b: Float[Array, "rows dim"],
    weight: Float[Array, " rows"] | None = None,
    *,
    off_diagonal_weight: float = 5e-3,
    eps: float = 1e-5,
) -> Float[Array, ""]:
    """Barlow Twins ``sum_i (1 - C_ii)² + lambda sum_{i != j} C_ij²`` of two paired views.

    Args:
        a, b: the two views, row ``n`` of one paired with row ``n`` of the other.
        weight: per-row weights (rows with weight 0 do not count); ``None`` counts every row once.
        off_diagonal_weight: ``lambda``.
        eps: added to each variance before the square root (the batch norm's epsilon).

    Returns:
        The loss, a float32 scalar.
    """
    a, b = a.astype(_F32), b.astype(_F32)
    w = jnp.ones(a.shape[0], _F32) if weight is None else weight.astype(_F32)
    a_hat, b_hat = _standardise(a, w, eps), _standardise(b, w, eps)
    cross = (w[:, None] * a_hat).T @ b_hat / jnp.maximum(jnp.sum(w), 1.0)  # (D, D)
    diagonal = jnp.diagonal(cross)
    off = cross - jnp.diag(diagonal)
    return jnp.sum((1.0 - diagonal) ** 2) + off_diagonal_weight * jnp.sum(off * off)


def downsample_pairs(x: Float[Array, "time features"]) -> Float[Array, "half features"]:
    """``D2(x)``: the mean of each non-overlapping pair of steps, pairs ending at the last step.

    Row ``m`` of the result is ``(x[s + 2m] + x[s + 2m + 1]) / 2`` with ``s = T mod 2``.
    """
    x = x.astype(_F32)
    length = x.shape[0]
    if length < 2:
        raise ValueError(f"downsample_pairs: need at least 2 steps, got {length}")
    start = length % 2
    pairs = x[start:].reshape(length // 2, 2, *x.shape[1:])  # (half, 2, features)
    return jnp.mean(pairs, axis=1)


def pooled_embedding(embeddings: Float[Array, "time dim"], eps: float = 1e-6) -> Float[Array, " dim"]:
    """``p(e) = m / ||m||`` with ``m`` the mean of the per-step embeddings, float32."""
    mean = jnp.mean(embeddings.astype(_F32), axis=0)
    return mean / jnp.sqrt(jnp.sum(mean * mean) + eps)


def cross_resolution_loss(
    coarse: Float[Array, "batch coarse_time dim"], fine: Float[Array, "batch time dim"]
) -> Float[Array, ""]:
    """``mean_b ||p(coarse_b) - p(fine_b)||²`` over a batch of per-step embeddings of two views.

    The caller decides which side carries a gradient (the JEPA stops the fine, target side).
    """
    gap = jax.vmap(pooled_embedding)(coarse) - jax.vmap(pooled_embedding)(fine)  # (B, D)
    return jnp.mean(jnp.sum(gap * gap, axis=-1))
