"""Kernel D: log-signature ridge learns a path-dependent rule and matches a batch ridge solve."""

import jax
import jax.numpy as jnp
import numpy as np

from chaosfm.predictor import SignatureConfig
from chaosfm.predictor._kernel_signature import (
    feature_count,
    init_signature,
    predict_signature,
    ridge_weights,
    signature_features,
    update_signature,
)

CONFIG = SignatureConfig(window=6, depth=3, forgetting=1.0, ridge=1e-3)


def _run(increments: np.ndarray, config: SignatureConfig):
    window = config.window
    features = jax.vmap(lambda i: signature_features(jax.lax.dynamic_slice(increments, (i,), (window,)), config))(
        jnp.arange(increments.shape[0] - window)
    )  # features[i] summarises increments[i : i + window], target increments[i + window]
    targets = increments[window:]

    def step(state, pair):
        phi, y = pair
        mean, _ = predict_signature(state, phi, config)
        return update_signature(state, phi, y, config), mean

    state, means = jax.lax.scan(step, init_signature(config), (features, targets))
    return state, features, targets, means


def test_features_are_intercept_plus_logsignature():
    phi = signature_features(jnp.arange(6.0), CONFIG)
    assert phi.shape == (feature_count(CONFIG),) == (6,)
    assert float(phi[0]) == 1.0
    # Level-1 terms of the log-signature are the total increments: time 1, level sum(increments).
    np.testing.assert_allclose(np.asarray(phi[1:3]), [1.0, 15.0], rtol=1e-5)


def test_online_ridge_equals_batch_ridge():
    rng = np.random.default_rng(0)
    increments = jnp.asarray(rng.standard_normal(300), jnp.float32)
    state, features, targets, _ = _run(increments, CONFIG)
    x, y = np.asarray(features, np.float64), np.asarray(targets, np.float64)
    batch = np.linalg.solve(x.T @ x + CONFIG.ridge * np.eye(x.shape[1]), x.T @ y)
    np.testing.assert_allclose(np.asarray(ridge_weights(state, CONFIG)), batch, rtol=2e-2, atol=2e-3)


def test_learns_a_mean_reverting_rule():
    # The next increment undoes part of the last window's move: a path-dependent, learnable rule.
    rng = np.random.default_rng(1)
    noise = rng.standard_normal(1500) * 0.3
    values = np.zeros(1500)
    for t in range(CONFIG.window, 1500):
        values[t] = -0.4 * values[t - CONFIG.window : t].sum() + noise[t]
    increments = jnp.asarray(values, jnp.float32)
    _, _, targets, means = _run(increments, CONFIG)
    late = slice(500, None)
    mse = float(jnp.mean((means[late] - targets[late]) ** 2))
    # The rule explains ~40% of the variance; the best possible MSE is the noise variance 0.09.
    assert mse < 0.75 * float(jnp.var(targets[late]))
    assert mse < 1.2 * 0.09
