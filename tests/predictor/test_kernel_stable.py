"""Kernel A: the CMS sampler matches scipy.stats.levy_stable; the fit recovers parameters."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from chaosfm.predictor import StableConfig, StableParams, fit_stable, predict_stable, sample_stable

CASES = [(1.5, 0.0), (1.8, 0.5), (1.2, -0.7), (0.8, 0.3), (1.0, 0.5), (2.0, 0.0)]


def _params(alpha, beta, gamma=1.0, delta=0.0):
    return StableParams(*(jnp.asarray(v, jnp.float32) for v in (alpha, beta, gamma, delta)))


@pytest.mark.parametrize("alpha,beta", CASES)
def test_cms_sampler_matches_scipy_levy_stable(alpha, beta, key):
    ours = np.asarray(sample_stable(key, _params(alpha, beta, 1.5, 0.3), (4000,)), np.float64)
    assert np.all(np.isfinite(ours))
    reference = stats.levy_stable(alpha, beta, loc=0.3, scale=1.5)
    # One-sample KS against scipy's CDF on a subsample (its CDF is a numerical integral) ...
    assert stats.kstest(ours[:400], reference.cdf).pvalue > 0.01
    # ... and two-sample KS against scipy's own sampler on everything.
    theirs = reference.rvs(size=4000, random_state=np.random.default_rng(7))
    assert stats.ks_2samp(ours, theirs).pvalue > 0.01


@pytest.mark.parametrize("alpha,beta", [(1.5, 0.0), (1.8, 0.5), (1.3, -0.6)])
def test_fit_recovers_parameters(alpha, beta):
    draws = stats.levy_stable(alpha, beta, loc=0.5, scale=2.0).rvs(
        size=5000, random_state=np.random.default_rng(1)
    )
    fitted = jax.jit(lambda x: fit_stable(x, StableConfig()))(jnp.asarray(draws, jnp.float32))
    assert abs(float(fitted.alpha) - alpha) < 0.1
    assert abs(float(fitted.gamma) - 2.0) < 0.2
    assert abs(float(fitted.beta) - beta) < 0.35
    assert abs(float(fitted.delta) - 0.5) < 0.3


def test_masked_samples_are_ignored():
    rng = np.random.default_rng(2)
    draws = rng.standard_normal(600).astype(np.float32)
    weights = np.ones(600, np.float32)
    draws[:100] = 1e6  # invalid slots of a not-yet-full buffer
    weights[:100] = 0.0
    fitted = jax.jit(lambda x, w: fit_stable(x, StableConfig(), w))(jnp.asarray(draws), jnp.asarray(weights))
    # Gaussian: alpha = 2, gamma = sigma / sqrt(2).
    assert float(fitted.alpha) > 1.8
    assert abs(float(fitted.gamma) - 1 / np.sqrt(2)) < 0.1


def test_prediction_is_median_of_draws(key):
    increments = jnp.asarray(np.random.default_rng(3).standard_t(3, 128), jnp.float32)
    out = predict_stable(increments, jnp.ones(128), StableConfig(), key=key)
    assert out.draws.shape == (StableConfig().num_draws,)
    assert float(out.prediction) == pytest.approx(float(jnp.median(out.draws)))
