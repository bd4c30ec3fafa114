"""The quantile Huber loss against rlax and by hand; quantile midpoints; CVaR of quantile atoms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rlax
from scipy import stats

from chaosfm.agents import cvar_from_quantiles, quantile_huber_loss, quantile_midpoints


def test_midpoints():
    np.testing.assert_allclose(quantile_midpoints(4), [0.125, 0.375, 0.625, 0.875])
    np.testing.assert_allclose(quantile_midpoints(1), [0.5])
    with pytest.raises(ValueError, match="n must be"):
        quantile_midpoints(0)


@pytest.mark.parametrize("kappa", [0.0, 0.3, 1.0, 5.0])
def test_loss_matches_rlax(key, kappa):
    for trial in range(3):
        k_pred, k_target = jax.random.split(jax.random.fold_in(key, trial))
        predicted = 2.0 * jax.random.normal(k_pred, (7,))
        target = 2.0 * jax.random.normal(k_target, (5,))
        taus = quantile_midpoints(7)
        ours = quantile_huber_loss(predicted, target, taus, kappa)
        reference = rlax.quantile_regression_loss(predicted, taus, target, huber_param=kappa)
        np.testing.assert_allclose(ours, reference, rtol=1e-6, atol=1e-7)
        # The gradient with respect to the prediction agrees too.
        ours_grad = jax.grad(quantile_huber_loss)(predicted, target, taus, kappa)
        ref_grad = jax.grad(lambda p: rlax.quantile_regression_loss(p, taus, target, huber_param=kappa))(predicted)
        np.testing.assert_allclose(ours_grad, ref_grad, rtol=1e-6, atol=1e-7)


def test_loss_by_hand_two_by_two():
    predicted = jnp.array([0.0, 1.0])
    target = jnp.array([0.5, 3.0])
    taus = jnp.array([0.25, 0.75])
    # u = target - predicted: row 0 [0.5, 3.0], row 1 [-0.5, 2.0]; all errors weigh tau except
    # u = -0.5 (weight 1 - 0.75 = 0.25).
    # kappa = 1: Huber [0.125, 2.5], [0.125, 1.5]
    #   row 0: 0.25 * (0.125 + 2.5) / 2 = 0.328125; row 1: (0.25 * 0.125 + 0.75 * 1.5) / 2 = 0.578125
    assert float(quantile_huber_loss(predicted, target, taus, 1.0)) == pytest.approx(0.90625)
    # kappa = 0 (pinball): row 0: 0.25 * 3.5 / 2 = 0.4375; row 1: (0.25 * 0.5 + 0.75 * 2) / 2 = 0.8125
    assert float(quantile_huber_loss(predicted, target, taus, 0.0)) == pytest.approx(1.25)


def test_loss_is_minimised_at_the_quantiles():
    # Minimising the pinball loss over atoms against many samples recovers the sample quantiles.
    samples = jnp.asarray(np.random.default_rng(0).exponential(size=4001), jnp.float32)
    taus = quantile_midpoints(5)
    grid = jnp.linspace(0.0, 3.0, 601)
    losses = jax.vmap(lambda x: jax.vmap(lambda t: quantile_huber_loss(x[None], samples, t[None], 0.0))(taus))(grid)
    best = grid[jnp.argmin(losses, axis=0)]
    np.testing.assert_allclose(best, np.quantile(np.asarray(samples), np.asarray(taus)), atol=0.01)


@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.25, 0.5])
def test_cvar_of_normal_quantiles_approaches_the_analytic_value(alpha):
    taus = np.asarray(quantile_midpoints(2000), np.float64)
    atoms = jnp.asarray(stats.norm.ppf(taus), jnp.float32)
    analytic = -stats.norm.pdf(stats.norm.ppf(alpha)) / alpha
    assert float(cvar_from_quantiles(atoms, alpha)) == pytest.approx(analytic, abs=5e-3)


def test_cvar_exact_on_atoms_and_batched():
    atoms = jnp.array([[3.0, -1.0, 2.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    np.testing.assert_allclose(cvar_from_quantiles(atoms, 1.0), [1.0, 1.0])  # the mean
    np.testing.assert_allclose(cvar_from_quantiles(atoms, 0.5), [-0.5, 1.0])  # lowest two
    np.testing.assert_allclose(cvar_from_quantiles(atoms, 0.25), [-1.0, 1.0])  # lowest one
    # alpha N = 1.5: the lowest atom in full, half of the next: (-1 + 0.5 * 0) / 1.5
    np.testing.assert_allclose(cvar_from_quantiles(atoms, 0.375), [-2.0 / 3.0, 1.0], rtol=1e-6)
    # Traced alpha: one compiled function for every level, non-decreasing in alpha.
    levels = jnp.linspace(0.05, 1.0, 20)
    curve = jax.jit(jax.vmap(lambda a: cvar_from_quantiles(atoms[0], a)))(levels)
    assert np.all(np.diff(np.asarray(curve)) >= -1e-6)
    assert float(curve[-1]) == pytest.approx(1.0)
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="alpha"):
            cvar_from_quantiles(atoms, bad)
