"""Kernel D: log-signature features of the recent path feeding an online ridge regression.

The path of the last ``window`` standardised increments, time-augmented (channels: time in
``[0, 1]`` and the cumulative increments), is summarised by its truncated log-signature (Lyons
1998; Chevyrev & Kormilitzin 2016, sec. 1.3; computed by ``signax``). A ridge regression of the
next increment on ``[1, logsig]`` is kept as sufficient statistics with exponential forgetting
(recursive least squares, Haykin 2002, ch. 9), so the update is O(F^2) and the solve O(F^3) with F
the feature count (6 for depth 3). The coefficients are solved once per update and kept in the
state, so a prediction is one dot product. Dimension letters: W window, F features.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from chaosfm.predictor._config import SignatureConfig
from chaosfm.predictor._linalg import solve_spd


class SignatureState(NamedTuple):
    gram: jax.Array  # (F, F) forgetting-weighted sum of phi phi^T
    moment: jax.Array  # (F,) forgetting-weighted sum of phi y
    residual_variance: jax.Array  # EMA of squared one-step residuals
    count: jax.Array  # updates seen (int32)
    weights: jax.Array  # (F,) ridge coefficients of gram and moment


def feature_count(config: SignatureConfig) -> int:
    """1 (intercept) + the log-signature dimension of a 2-channel path at ``config.depth``."""
    import signax  # imported when traced (equinox with it): a restart from exports never traces

    path = jnp.zeros((config.window + 1, 2))
    return 1 + int(signax.logsignature(path, config.depth).shape[-1])


def signature_features(increments: jax.Array, config: SignatureConfig) -> jax.Array:
    """``[1, logsig(path)]`` of the last ``config.window`` increments ``(W,) -> (F,)``."""
    import signax

    window = increments.shape[-1]
    time = jnp.linspace(0.0, 1.0, window + 1, dtype=increments.dtype)
    level = jnp.concatenate([jnp.zeros((1,), increments.dtype), jnp.cumsum(increments)])
    path = jnp.stack([time, level], axis=-1)  # (W + 1, 2)
    logsig = signax.logsignature(path, config.depth)
    return jnp.concatenate([jnp.ones((1,), increments.dtype), logsig])


def init_signature(config: SignatureConfig, dtype=jnp.float32) -> SignatureState:
    size = feature_count(config)
    return SignatureState(
        gram=jnp.zeros((size, size), dtype),
        moment=jnp.zeros((size,), dtype),
        residual_variance=jnp.ones((), dtype),
        count=jnp.zeros((), jnp.int32),
        weights=jnp.zeros((size,), dtype),
    )


def ridge_weights(state: SignatureState, config: SignatureConfig) -> jax.Array:
    """Ridge coefficients ``(F,)``: ``(G + lambda I)^-1 m``, solved from the sufficient statistics."""
    size = state.moment.shape[0]
    # Gauss-Jordan without pivoting (the matrix is SPD): a few fused ops, where
    # jnp.linalg.solve's LAPACK call and pivot loop cost ~20 dispatches per step on CPU.
    return solve_spd(state.gram + config.ridge * jnp.eye(size, dtype=state.gram.dtype), state.moment)


def predict_signature(
    state: SignatureState, features: jax.Array, config: SignatureConfig
) -> tuple[jax.Array, jax.Array]:
    """Point prediction and predictive standard deviation of the next increment."""
    mean = jnp.sum(features * state.weights)
    return mean, jnp.sqrt(state.residual_variance)


def update_signature(
    state: SignatureState, features: jax.Array, target: jax.Array, config: SignatureConfig
) -> SignatureState:
    """Add the pair (features at t-1, increment at t) with forgetting."""
    mean, _ = predict_signature(state, features, config)
    forget = config.forgetting
    decay = jnp.maximum(1.0 - forget, 1.0 / (state.count.astype(target.dtype) + 2.0))
    new = SignatureState(
        gram=forget * state.gram + jnp.outer(features, features),
        moment=forget * state.moment + features * target,
        residual_variance=(1.0 - decay) * state.residual_variance + decay * (target - mean) ** 2,
        count=state.count + 1,
        weights=state.weights,
    )
    return new._replace(weights=ridge_weights(new, config))
