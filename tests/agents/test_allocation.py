"""Soft cross-sectional allocation: net and gross hold, weights rise with scores, bad inputs raise."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chaosfm.agents import soft_allocation


@pytest.mark.parametrize("net, gross", [(0.0, 2.0), (1.0, 1.0), (0.3, 1.5), (-0.5, 1.0), (1.0, 3.0)])
def test_net_and_gross_hold(key, net, gross):
    scores = jax.random.normal(key, (64, 20))  # 64 portfolios of 20 assets
    for temperature in (0.05, 1.0, 20.0):
        weights = jax.jit(jax.vmap(lambda s: soft_allocation(
            s, temperature=temperature, net_exposure=net, gross_leverage=gross)))(scores)
        np.testing.assert_allclose(np.sum(weights, axis=-1), net, atol=1e-6)
        np.testing.assert_allclose(np.sum(np.abs(weights), axis=-1), gross, atol=1e-6)


def test_monotone_in_scores(key):
    scores = jax.random.normal(key, (50, 12))
    weights = np.asarray(jax.vmap(lambda s: soft_allocation(s, temperature=0.7, net_exposure=0.2,
                                                            gross_leverage=1.8))(scores))
    order = np.argsort(np.asarray(scores), axis=-1)
    ranked = np.take_along_axis(weights, order, axis=-1)
    assert np.all(np.diff(ranked, axis=-1) > 0)  # strictly: both legs are non-empty
    # Long-only (gross == net): the lower half gets nothing, never a negative weight.
    long_only = np.asarray(soft_allocation(scores[0], temperature=0.7, net_exposure=1.0, gross_leverage=1.0))
    assert np.all(long_only >= 0) and np.all(np.diff(long_only[order[0]]) >= 0)
    # Raising one asset's score raises its weight.
    bumped = scores[0].at[3].add(0.5)
    before = soft_allocation(scores[0], temperature=0.7, net_exposure=0.0, gross_leverage=2.0)
    after = soft_allocation(bumped, temperature=0.7, net_exposure=0.0, gross_leverage=2.0)
    assert float(after[3]) > float(before[3])


def test_temperature_limits():
    scores = jnp.array([0.3, -1.0, 2.0, 0.1])
    cold = soft_allocation(scores, temperature=1e-3, net_exposure=0.0, gross_leverage=2.0)
    np.testing.assert_allclose(cold, [0.0, -1.0, 1.0, 0.0], atol=1e-6)  # best long, worst short
    hot = soft_allocation(scores, temperature=1e3, net_exposure=0.0, gross_leverage=2.0)
    centred = scores - scores.mean()
    np.testing.assert_allclose(hot, centred / np.sum(np.abs(centred)) * 2.0, atol=1e-3)


def test_equal_scores_and_gradients():
    flat = soft_allocation(jnp.zeros(5), temperature=1.0, net_exposure=0.5, gross_leverage=1.0)
    np.testing.assert_allclose(flat, 0.1)
    grad = jax.grad(lambda s: soft_allocation(s, temperature=1.0, net_exposure=0.0, gross_leverage=1.0)[0])(jnp.zeros(5))
    assert np.all(np.isfinite(grad))


def test_infeasible_inputs_raise():
    with pytest.raises(ValueError, match=r"\|net_exposure\| = 1.5 exceeds gross_leverage = 1.0"):
        soft_allocation(jnp.ones(3), temperature=1.0, net_exposure=-1.5, gross_leverage=1.0)
    with pytest.raises(ValueError, match="temperature"):
        soft_allocation(jnp.ones(3), temperature=0.0, net_exposure=0.0, gross_leverage=1.0)
