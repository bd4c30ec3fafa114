"""Shared test helpers for the model tests."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


def perturb(model, seed: int = 0, scale: float = 0.2):
    """Fill the zero-initialised leaves (output projections) with noise, so every path matters."""
    rng = np.random.default_rng(seed)

    def fill(leaf):
        if eqx.is_inexact_array(leaf) and not np.any(np.asarray(leaf)):
            return jnp.asarray(scale * rng.standard_normal(leaf.shape), leaf.dtype)
        return leaf

    return jax.tree_util.tree_map(fill, model)


def max_error(actual, expected) -> float:
    """Largest absolute difference over two pytrees, relative to the scale of ``expected``."""
    worst = 0.0
    for a, e in zip(jax.tree_util.tree_leaves(actual), jax.tree_util.tree_leaves(expected), strict=True):
        a, e = np.asarray(a, np.float64), np.asarray(e, np.float64)
        assert a.shape == e.shape
        scale = max(1.0, float(np.max(np.abs(e), initial=0.0)))
        worst = max(worst, float(np.max(np.abs(a - e), initial=0.0)) / scale)
    return worst
