"""Small dense linear algebra shared by the kernels, written for XLA's CPU backend."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def solve_spd(matrix: jax.Array, rhs: jax.Array) -> jax.Array:
    """``matrix^-1 rhs`` for a small symmetric positive definite ``(n, n)`` matrix.

    Gauss-Jordan elimination without pivoting (safe: an SPD matrix has positive pivots), one
    whole-row update per step, written with ``where`` so XLA fuses the steps. For the
    ``(m + 1, m + 1)`` Anderson systems of kernel C and the ridge system of kernel D this is
    ~1.5x faster on CPU than ``jnp.linalg.solve``, whose LAPACK call and pivoting cost more than
    the flops.
    """
    size = matrix.shape[0]
    augmented = jnp.concatenate([matrix, rhs[:, None]], axis=1)  # (n, n + 1)
    rows = jnp.arange(size)[:, None]
    for k in range(size):
        row = augmented[k] / augmented[k, k]
        augmented = jnp.where(rows == k, row[None, :], augmented - augmented[:, k : k + 1] * row[None, :])
    return augmented[:, size]
