"""Flow matching: the Sinkhorn plan's marginals and matching, and a sampler that recovers a mixture."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy.optimize import linear_sum_assignment

from chaosfm.models import VelocityField, cfm_loss, ot_coupling, ot_plan, sample_flow


def test_sinkhorn_plan_marginals_and_the_optimal_assignment():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((10, 2)), rng.standard_normal((10, 2)) + 0.5
    plan = np.asarray(ot_plan(jnp.asarray(a), jnp.asarray(b), epsilon=1e-3, max_iterations=5000))
    np.testing.assert_allclose(plan.sum(axis=1), 1 / 10, atol=2e-4)
    np.testing.assert_allclose(plan.sum(axis=0), 1 / 10, atol=2e-4)
    # With little entropy the plan is the optimal assignment (scipy's Hungarian solver).
    cost = ((a[:, None] - b[None]) ** 2).sum(-1)
    rows, cols = linear_sum_assignment(cost)
    np.testing.assert_array_equal(plan.argmax(axis=1)[rows], cols)
    i, j = ot_coupling(jax.random.key(0), jnp.asarray(a), jnp.asarray(b), epsilon=1e-3, max_iterations=5000)
    np.testing.assert_array_equal(np.asarray(i)[cols], rows)  # each target gets its optimal source
    np.testing.assert_array_equal(np.asarray(j), np.arange(10))


def test_sampler_recovers_a_gaussian_mixture():
    """Independent minibatch pairs here (the OT pairing is tested above and in the JEPA loss)."""
    centres, weights, std = np.array([[-2.0, 0.0], [2.0, 1.0]]), np.array([0.3, 0.7]), 0.3
    field = VelocityField(2, 1, hidden=64, depth=2, key=jax.random.key(0))
    optimizer = optax.adam(3e-3)
    state = optimizer.init(eqx.filter(field, eqx.is_inexact_array))

    @eqx.filter_jit
    def step(field, state, key):
        data_key, loss_key = jax.random.split(key)
        which = jax.random.bernoulli(data_key, weights[1], (256,)).astype(jnp.int32)
        x1 = jnp.asarray(centres)[which] + std * jax.random.normal(jax.random.fold_in(data_key, 1), (256, 2))
        cond = jnp.zeros((256, 1))
        loss, grads = eqx.filter_value_and_grad(lambda f: cfm_loss(f, loss_key, x1, cond, sigma_min=0.0, use_ot=False))(field)
        updates, state = optimizer.update(grads, state)
        return eqx.apply_updates(field, updates), state, loss

    for k in range(400):
        field, state, loss = step(field, state, jax.random.key(k + 1))
    drawn = np.asarray(sample_flow(field, jnp.zeros(1), 4000, 2, key=jax.random.key(99), steps=16))
    nearest = np.argmin(((drawn[:, None] - centres[None]) ** 2).sum(-1), axis=1)
    fractions = np.bincount(nearest, minlength=2) / len(drawn)
    np.testing.assert_allclose(fractions, weights, atol=0.06)
    for c in range(2):
        np.testing.assert_allclose(drawn[nearest == c].mean(axis=0), centres[c], atol=0.2)
        assert 0.15 < drawn[nearest == c].std(axis=0).mean() < 0.5
