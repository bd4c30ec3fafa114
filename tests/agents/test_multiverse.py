"""Multiverse Crossing: tangent-plane perturbations stay on the sphere; scores on known clouds."""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from chaosfm.agents import CrossingScores, confidence_filter, crossing_scores, filter, multiverse, tangent_perturb
from chaosfm.models import JEPA, JEPAConfig


def test_tangent_perturbation_keeps_unit_norm(key):
    z = jax.random.normal(key, (16,))
    for scale in (1e-3, 0.1, 2.0):
        points = np.asarray(tangent_perturb(z, 64, scale, key=jax.random.fold_in(key, 1)))
        np.testing.assert_allclose(np.linalg.norm(points, axis=1), 1.0, atol=1e-6)
    unit = np.asarray(z / jnp.linalg.norm(z))
    near = np.asarray(tangent_perturb(z, 64, 1e-3, key=key))
    assert np.all(near @ unit > 0.999)  # small nudges stay close to the original point
    # The noise has no component along z: cos(angle) = 1 / sqrt(1 + |tangent|^2) exactly.
    far = np.asarray(tangent_perturb(z, 8, 0.5, key=key))
    assert np.all(far @ unit < 1.0) and np.all(far @ unit > 0)


def _cloud(means, within, per=200, seed=0):
    rng = np.random.default_rng(seed)
    means = np.asarray(means, float)
    return means[:, None, :] + within * rng.standard_normal((means.shape[0], per, means.shape[1]))


def test_convergence_is_one_when_universes_agree_and_low_when_they_split():
    same = _cloud([[1.0, 0, 0]] * 4, 0.1)
    same = np.broadcast_to(same[:1], same.shape)  # identical samples in every universe
    starts = np.eye(3)[[0, 0, 0, 0]]
    assert crossing_scores(starts, same[None]).convergence == pytest.approx(1.0)
    split = _cloud([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [-1.0, 0, 0]], 0.01)
    assert crossing_scores(starts, split[None]).convergence < 0.01
    # W / (W + B) from the ANOVA split, computed by hand.
    cloud = _cloud([[0.0, 0], [1.0, 0]], 0.5, per=1000)
    within = np.mean(np.sum((cloud - cloud.mean(1, keepdims=True)) ** 2, -1))
    means = cloud.mean(1)
    between = np.mean(np.sum((means - means.mean(0)) ** 2, -1))
    got = crossing_scores(np.eye(2), cloud[None]).convergence
    assert got == pytest.approx(within / (within + between))


def test_bifurcation_counts_regimes():
    one = np.tile(np.array([1.0, 0, 0, 0]), (2, 50, 1))
    assert crossing_scores(np.eye(4)[:2], one[None]).bifurcation == pytest.approx(1.0, abs=1e-6)
    two = np.concatenate([np.tile([1.0, 0, 0, 0], (1, 50, 1)), np.tile([0, 1.0, 0, 0], (1, 50, 1))])
    assert crossing_scores(np.eye(4)[:2], two[None]).bifurcation == pytest.approx(2.0, abs=1e-6)


def test_lyapunov_proxy_recovers_a_known_growth_rate():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((4, 8, 3))
    base -= base.reshape(-1, 3).mean(0)
    base /= np.sqrt(np.mean(np.sum(base.reshape(-1, 3) ** 2, -1)))
    starts = base[:, 0, :]
    starts = (starts - starts.mean(0)) / np.sqrt(np.mean(np.sum((starts - starts.mean(0)) ** 2, -1)))
    rate = 0.7
    futures = np.stack([np.exp(rate * k) * base for k in (1, 2, 3)])
    assert crossing_scores(starts, futures).lyapunov == pytest.approx(rate, abs=1e-9)


def test_filter_keeps_convergent_origins():
    scores = CrossingScores(np.array([0.2, 0.8, 0.95]), np.ones(3), np.zeros(3))
    np.testing.assert_array_equal(confidence_filter(scores, 0.8), [False, True, True])
    np.testing.assert_array_equal(filter(pd.DataFrame({"convergence": [0.5, 0.4]}), 0.45), [True, False])
    with pytest.raises(ValueError, match="threshold"):
        filter([0.5], 1.5)


def test_multiverse_shapes_and_sphere(key):
    config = JEPAConfig(n_features=3, context_length=16, d_model=16, n_layers=1, d_state=8, head_dim=8,
                        d_embed=8, d_pred=8, min_future=4, max_future=8, min_span=2, max_span=4,
                        cfm_weight=1.0, cfm_horizon=3, cfm_steps=2)
    model = JEPA(config, key=key)
    z = jax.random.normal(key, (8,))
    starts, futures = multiverse(model, z, key=key, universes=3, samples=4, steps=2)
    assert starts.shape == (3, 8) and futures.shape == (2, 3, 4, 8)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(futures), axis=-1), 1.0, atol=1e-5)
    scores = crossing_scores(np.asarray(starts), np.asarray(futures))
    assert 0 <= scores.convergence <= 1 and 1 <= scores.bifurcation <= 8
    with pytest.raises(ValueError, match="flow head"):
        multiverse(JEPA(config.replace(cfm_weight=0.0), key=key), z, key=key)
