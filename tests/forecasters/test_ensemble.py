"""Tests for chaosfm.forecasters._ensemble: the pooled CRPS, its simplex solver, and the Ensemble."""

import itertools

import jax
import numpy as np
import pytest
import scoringrules

from chaosfm.evaluate import crps
from chaosfm.forecasters import Ensemble, make_forecaster
from chaosfm.forecasters._ensemble import crps_terms, pooled_crps, simplex_weights

from .test_baselines import market_frame, random_prices


def test_pooled_crps_equals_the_crps_of_the_concatenated_pool():
    # w = (0.25, 0.75) is the pool of 40 samples of one member and 120 of the other: the CRPS of
    # the concatenation's empirical distribution is the objective with all pairs in B_ii.
    rng = np.random.default_rng(0)
    first, second = rng.normal(0.0, 1.0, (40, 3, 2)), rng.normal(0.7, 2.0, (120, 3, 2))
    observed = rng.normal(0.0, 1.0, (3, 2))
    weights = np.array([0.25, 0.75])
    a, b = crps_terms([first, second], observed, fair=False)
    objective = np.einsum("i...,i", a, weights) - 0.5 * np.einsum("ij...,i,j", b, weights, weights)
    pool = np.concatenate([first, second])
    reference = scoringrules.crps_ensemble(observed, pool, m_axis=0, estimator="nrg", backend="numpy")
    np.testing.assert_allclose(objective, reference, rtol=1e-12)
    # One member alone: the fair CRPS the evaluator scores with.
    a, b = crps_terms([first, second], observed)
    for i, samples in enumerate((first, second)):
        np.testing.assert_allclose(a[i] - 0.5 * b[i, i], crps(samples, observed), rtol=1e-12)
    for h, c in itertools.product(range(3), range(2)):
        assert pooled_crps(weights, a[:, h, c], b[:, :, h, c]) == pytest.approx(
            float(weights @ a[:, h, c] - 0.5 * weights @ b[:, :, h, c] @ weights))


def test_simplex_solver_matches_a_brute_force_grid():
    rng = np.random.default_rng(1)
    a_sum, b_sum = 0.0, 0.0
    for _ in range(30):
        truth = rng.normal(0.2, 1.2, (2, 1))
        members = [rng.normal(mean, scale, (50, 2, 1)) for mean, scale in ((0.0, 1.0), (0.4, 2.0), (-0.3, 0.5))]
        a, b = crps_terms(members, truth)
        a_sum, b_sum = a_sum + a.mean(axis=(1, 2)), b_sum + b.mean(axis=(2, 3))
    a, b = a_sum / 30, b_sum / 30
    weights = simplex_weights(a, b)
    assert weights.min() >= 0 and weights.sum() == pytest.approx(1.0)
    grid = [np.array([i, j, 100 - i - j]) / 100 for i in range(101) for j in range(101 - i)]
    best = min(pooled_crps(w, a, b) for w in grid)
    solved = pooled_crps(weights, a, b)
    assert solved <= best + 1e-9
    assert best - solved < 5e-6  # the grid's 0.01 spacing costs O(0.005^2) near an interior minimum


@pytest.fixture(scope="module")
def walk():
    """A Gaussian random walk in log price with constant volatility 1%."""
    return market_frame({"walk": random_prices(700, seed=3)})


def test_fitted_weights_favour_the_right_member(walk, key):
    model = Ensemble(["random_walk", "last_value"], validation_fraction=0.4).fit(walk)
    weights = model.weights(3)
    assert list(weights) == ["random_walk", "last_value"]
    assert weights["random_walk"] > 0.8
    assert sum(weights.values()) == pytest.approx(1.0)
    np.testing.assert_allclose(model.weights_[3], list(weights.values()))
    equal = Ensemble(["random_walk", "last_value"], weights="equal").fit(walk)
    assert equal.weights(3) == {"random_walk": 0.5, "last_value": 0.5}
    assert model.trained_through == equal.trained_through == {"walk": walk["timestamp"].iloc[-1]}
    assert model.upstream_trained_through() == []


def test_forecast_draws_members_by_the_weights(walk, key):
    model = Ensemble(["random_walk", "last_value"], weights="equal").fit(walk)
    model.weights_[4] = np.array([0.3, 0.7])
    context = walk.iloc[-100:]
    forecast = model.forecast(context, 4, 4000, key=key)
    assert forecast.samples.shape == (4000, 4, 1) and forecast.columns == ["close"]
    assert forecast.asset == "walk" and np.all(np.isfinite(forecast.samples))
    constant = np.all(forecast.samples == context["close"].iloc[-1], axis=(1, 2))
    assert abs(constant.mean() - 0.7) < 0.03
    # Shuffled: the last-value paths are not all at the end.
    assert 0.5 < constant[:2000].mean() / constant[2000:].mean() < 2
    again = model.forecast(context, 4, 4000, key=key)
    np.testing.assert_array_equal(forecast.samples, again.samples)
    other = model.forecast(context, 4, 4000, key=jax.random.fold_in(key, 1))
    assert not np.array_equal(forecast.samples, other.samples)
    with pytest.raises(ValueError, match="key"):
        model.forecast(context, 4, 10)
    with pytest.raises(RuntimeError, match="before fit"):
        Ensemble(["random_walk", "last_value"]).forecast(context, 4, 10, key=key)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(members=["garch"]), "at least two"),
        (dict(members=["garch", "garch"]), "must not repeat"),
        (dict(members=["garch", "prophet"]), "unknown forecaster 'prophet'; known forecasters: ar"),
        (dict(members=["garch", "har_rv"], weights="foo"), "weights must be one of equal, fitted, got 'foo'"),
        (dict(members=["garch", "har_rv"], validation_fraction=1.0), r"must lie in \(0, 1\), got 1.0"),
        (dict(members=["garch", "har_rv"], validation_fraction=0), r"validation_fraction must lie in .*, got 0"),
        (dict(members=["garch", "har_rv"], member_options={"ar": {}}), r"member_options names \['ar'\]"),
    ],
)
def test_bad_options_are_named(options, message):
    with pytest.raises(ValueError, match=message):
        Ensemble(**options)


def test_ensemble_through_the_registry(walk):
    model = make_forecaster("ensemble", members=["random_walk", "ar"], member_options={"ar": {"order": 3}})
    assert isinstance(model, Ensemble) and model.name == "ensemble"
    assert model.members[1].order == 3
    assert model.kinds == ("market", "trajectory")
    assert make_forecaster("ensemble", members=["garch", "random_walk"]).kinds == ("market",)
    with pytest.raises(ValueError, match="min_context=64"):
        model.fit(walk.iloc[:70])
