"""Tests for chaosfm.forecasters._aci: adaptive conformal inference and its aggregation."""

import numpy as np

from chaosfm.forecasters import ACI_LEVELS, aci_init, aci_samples, aci_update, aci_weights


def test_aci_update_moves_each_level_as_gibbs_and_candes():
    gammas = (0.01, 0.1)
    state = aci_init(gammas, horizon=2, channels=1)
    quantiles = np.broadcast_to(np.linspace(-1.0, 1.0, len(ACI_LEVELS)), (2, 1, len(ACI_LEVELS)))
    new = aci_update(state, 1, np.array([0.5]), quantiles, np.array([2.0]), gammas)
    tau = np.asarray(ACI_LEVELS)
    exceed = (0.5 > quantiles[0, 0]).astype(float)
    for g, gamma in enumerate(gammas):
        np.testing.assert_allclose(new.levels[g, 1, 0], tau + gamma * (exceed - (1 - tau)))
        np.testing.assert_allclose(new.levels[g, 0, 0], tau)  # step 0 saw nothing
    residual = (0.5 - quantiles[0, 0]) / 2.0
    np.testing.assert_allclose(new.loss[0, 1, 0], np.maximum(tau * residual, (tau - 1) * residual))
    assert list(new.updates) == [0, 1]
    np.testing.assert_allclose(state.levels[0, 1, 0], tau)  # the input state is not modified


def test_aci_weights_favour_the_expert_with_less_loss():
    state = aci_init((0.01, 0.1), horizon=1, channels=1)
    state = state._replace(loss=state.loss + np.array([0.0, 5.0])[:, None, None, None], updates=np.array([10]))
    weights = aci_weights(state)
    np.testing.assert_allclose(weights.sum(axis=0), 1.0)
    rate = np.sqrt(8 * np.log(2) / 10)
    np.testing.assert_allclose(weights[0, 0, 0, 0], 1 / (1 + np.exp(-rate * 5.0)))


def test_aci_samples_read_the_samples_at_the_adapted_levels():
    samples = np.arange(1000.0)
    levels = np.asarray(ACI_LEVELS) + 0.02  # every level moved up by 0.02
    moved, quantiles = aci_samples(samples, levels)
    np.testing.assert_allclose(quantiles, np.quantile(samples, levels))
    # a sample at rank u now sits at the samples' quantile of u + 0.02 (inside the grid)
    u = (np.arange(1000) + 0.5) / 1000
    inside = (u >= 0.05) & (u <= 0.95)
    np.testing.assert_allclose(moved[inside], np.quantile(samples, u[inside] + 0.02), atol=1e-9)
    same, _ = aci_samples(samples, np.asarray(ACI_LEVELS))
    np.testing.assert_allclose(same, np.quantile(samples, u))
