"""Tests for chaosfm.evaluate._metrics: metrics against hand-worked values or a slow reference."""

import math

import numpy as np
import pytest
from scipy import stats

from chaosfm.evaluate import (
    coverage,
    crps,
    directional_accuracy,
    mae,
    mase,
    normalised_error,
    pinball,
    rmse,
    smape,
    valid_prediction_time,
    wql,
)


def crps_fair_reference(samples, observed):
    """E|X - y| - 0.5 E|X - X'| over distinct pairs, one element at a time, in plain Python."""
    samples = np.asarray(samples, dtype=float)
    flat_samples = samples.reshape(samples.shape[0], -1)
    flat_observed = np.asarray(observed, dtype=float).reshape(-1)
    out = []
    for column, y in enumerate(flat_observed):
        xs = flat_samples[:, column].tolist()
        m = len(xs)
        first = sum(abs(x - y) for x in xs) / m
        pairs = sum(abs(xs[i] - xs[j]) for i in range(m) for j in range(m) if i != j)
        pairs /= m * (m - 1)
        out.append(first - 0.5 * pairs)
    return np.array(out).reshape(np.shape(observed))


def gaussian_crps(mu, sigma, y):
    """Closed form (Gneiting & Raftery 2007, eq. 5)."""
    z = (y - mu) / sigma
    phi, cdf = stats.norm.pdf(z), stats.norm.cdf(z)
    return sigma * (z * (2 * cdf - 1) + 2 * phi - 1 / math.sqrt(math.pi))


# --------------------------------------------------------------------------------------------------
# CRPS


def test_crps_hand_worked():
    # samples {1, 2, 3}, y = 0: E|X - y| = 2, mean |X - X'| over the 6 distinct pairs = 8/6.
    assert crps(np.array([1.0, 2.0, 3.0]), 0.0) == pytest.approx(2 - 0.5 * 8 / 6)
    # the fair estimator scores a two-member ensemble {0, 1} at y = 0 as 0.5 - 0.5 * 1 = 0.
    assert crps(np.array([0.0, 1.0]), 0.0) == pytest.approx(0.0)


def test_crps_matches_slow_reference_on_batched_input():
    rng = np.random.default_rng(0)
    samples = rng.standard_t(df=3, size=(9, 4, 3))  # (S, H, C)
    observed = rng.normal(size=(4, 3))
    result = crps(samples, observed)
    assert result.shape == (4, 3)
    expected = crps_fair_reference(samples, observed)
    np.testing.assert_allclose(result, expected, rtol=1e-12, atol=1e-12)


def test_crps_matches_gaussian_closed_form_for_many_samples():
    mu, sigma, members = 0.5, 2.0, 20_000
    observed = np.array([-3.0, 0.0, 0.5, 1.7, 6.0])
    # an evenly spread ensemble (normal quantiles at (i - 1/2)/S) leaves no Monte Carlo noise
    grid = mu + sigma * stats.norm.ppf((np.arange(members) + 0.5) / members)
    samples = np.repeat(grid[:, None], observed.size, axis=1)
    expected = gaussian_crps(mu, sigma, observed)
    np.testing.assert_allclose(crps(samples, observed), expected, rtol=1e-3, atol=1e-4)
    # and random draws agree to Monte Carlo accuracy
    draws = mu + sigma * np.random.default_rng(1).standard_normal((20_000, observed.size))
    np.testing.assert_allclose(crps(draws, observed), expected, atol=0.05)


def test_crps_is_unbiased_for_small_ensembles():
    # With 5 members the empirical-CDF CRPS is too high by E|X - X'| / (2 S) = (2/sqrt(pi)) / 10;
    # the fair estimator averages to the true CRPS of the sampling distribution.
    rng = np.random.default_rng(2)
    members, replicates, y = 5, 40_000, 0.3
    samples = rng.standard_normal((members, replicates))
    mean_score = crps(samples, np.full(replicates, y)).mean()
    truth = gaussian_crps(0.0, 1.0, y)
    assert mean_score == pytest.approx(truth, abs=0.01)
    assert abs(mean_score - (truth + 2 / math.sqrt(math.pi) / (2 * members))) > 0.08


def test_crps_single_sample_is_absolute_error():
    np.testing.assert_allclose(crps(np.array([[1.0, -2.0]]), np.array([0.5, 1.0])), [0.5, 3.0])


def test_crps_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="samples"):
        crps(np.zeros((10, 4, 3)), np.zeros((4,)))
    with pytest.raises(ValueError, match="finite"):
        crps(np.array([np.nan, 1.0]), 0.0)


# --------------------------------------------------------------------------------------------------
# Quantile losses


def test_pinball_hand_worked():
    levels = [0.1, 0.9]
    forecasts = np.array([[1.0, 1.0], [1.0, 1.0]])  # (Q, 2)
    observed = np.array([3.0, -1.0])
    # y above q: tau * (y - q); y below q: (1 - tau) * (q - y).
    np.testing.assert_allclose(pinball(forecasts, observed, levels), [[0.2, 1.8], [1.8, 0.2]])


def test_pinball_shapes_and_levels_are_validated():
    with pytest.raises(ValueError, match="levels"):
        pinball(np.zeros((2, 3)), np.zeros(3), [0.5])
    with pytest.raises(ValueError, match="levels"):
        pinball(np.zeros((2, 3)), np.zeros(3), [0.0, 0.5])
    with pytest.raises(ValueError, match="quantile_forecasts"):
        pinball(np.zeros((2, 4)), np.zeros(3), [0.1, 0.5])


def test_wql_matches_gluonts_formula():
    rng = np.random.default_rng(3)
    levels = np.array([0.1, 0.5, 0.9])
    observed = rng.normal(3.0, 1.0, size=(6, 2))
    forecasts = np.quantile(rng.normal(3.0, 1.0, size=(100, 6, 2)), levels, axis=0)
    # GluonTS quantile_loss: 2 * sum(|(y - q) * ((y <= q) - tau)|), then / sum|y|, mean over tau.
    per_level = [
        2 * np.sum(np.abs((observed - forecasts[i]) * ((observed <= forecasts[i]) - tau)))
        / np.sum(np.abs(observed))
        for i, tau in enumerate(levels)
    ]
    assert wql(forecasts, observed, levels) == pytest.approx(np.mean(per_level), rel=1e-12)


def test_wql_hand_worked_and_zero_target():
    # one level 0.5, y = (2, -2), q = (1, -1): pinball 0.5 each, WQL = 2 * 1.0 / 4.
    assert wql(np.array([[1.0, -1.0]]), np.array([2.0, -2.0]), [0.5]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="all zeros"):
        wql(np.ones((1, 3)), np.zeros(3), [0.5])


# --------------------------------------------------------------------------------------------------
# Point metrics


def test_rmse_mae_smape_hand_worked():
    point = np.array([1.0, 0.0, 0.0, 4.0])
    observed = np.array([3.0, 0.0, 5.0, 4.0])
    assert rmse(point, observed) == pytest.approx(math.sqrt((4 + 0 + 25 + 0) / 4))
    assert mae(point, observed) == pytest.approx((2 + 0 + 5 + 0) / 4)
    # 200 * 2/4 = 100, 0/0 -> 0, 200 * 5/5 = 200, 0 -> mean 75.
    assert smape(point, observed) == pytest.approx(75.0)


def test_point_metrics_reduce_over_axis():
    point = np.array([[1.0, 2.0], [3.0, 4.0]])
    observed = np.array([[1.0, 0.0], [0.0, 4.0]])
    np.testing.assert_allclose(mae(point, observed, axis=0), [1.5, 1.0])
    np.testing.assert_allclose(rmse(point, observed, axis=1), [math.sqrt(2.0), math.sqrt(4.5)])
    with pytest.raises(ValueError, match="point has shape"):
        rmse(point, observed[0])


def test_mase_hand_worked_uses_only_insample():
    insample = np.array([1.0, 2.0, 4.0, 7.0])  # lag-1 differences 1, 2, 3 -> scale 2
    point = np.array([8.0, 10.0])
    observed = np.array([9.0, 13.0])  # errors 1, 3 -> MAE 2
    assert mase(point, observed, insample) == pytest.approx(1.0)
    # lag-2 differences 3, 5 -> scale 4; the evaluation window (jumps of 2 and 4) never enters it.
    assert mase(point, observed, insample, season=2) == pytest.approx(0.5)


def test_mase_is_per_series_when_batched():
    insample = np.array([[0.0, 0.0], [1.0, 10.0], [2.0, 20.0]])  # scales 1 and 10
    point = np.zeros((2, 2))
    observed = np.array([[1.0, 10.0], [3.0, 30.0]])
    np.testing.assert_allclose(mase(point, observed, insample, axis=0), [2.0, 2.0])
    assert mase(point, observed, insample) == pytest.approx(2.0)


def test_mase_errors():
    with pytest.raises(ValueError, match="insample has 2 steps"):
        mase(np.zeros(3), np.ones(3), np.array([1.0, 2.0]), season=2)
    with pytest.raises(ValueError, match="scale 0"):
        mase(np.zeros(3), np.ones(3), np.array([5.0, 5.0, 5.0]))
    with pytest.raises(ValueError, match="insample must have shape"):
        mase(np.zeros((3, 2)), np.ones((3, 2)), np.arange(5.0))


def test_coverage_hand_worked():
    samples = np.repeat(np.arange(1.0, 102.0)[:, None], 5, axis=1)  # (101, 5): 1..101 per column
    # linear-interpolated 10% and 90% quantiles of 1..101 are 11 and 91 (both ends inside).
    observed = np.array([11.0, 50.0, 91.0, 95.0, 5.0])
    assert coverage(samples, observed, level=0.8) == pytest.approx(3 / 5)
    assert coverage(samples, observed, level=0.9) == pytest.approx(4 / 5)  # [6, 96]


def test_coverage_of_calibrated_forecast_is_near_nominal():
    rng = np.random.default_rng(4)
    samples = rng.standard_normal((500, 4000))
    observed = rng.standard_normal(4000)
    assert coverage(samples, observed, level=0.8) == pytest.approx(0.8, abs=0.03)
    assert coverage(samples, observed, level=0.5) == pytest.approx(0.5, abs=0.03)


def test_directional_accuracy_hand_worked():
    last_value = np.array([10.0, 0.0])  # (C,) broadcast over (H, C)
    point = np.array([[11.0, -1.0], [9.0, 0.0]])
    observed = np.array([[12.0, 1.0], [8.0, 0.0]])
    # up/up hit, down/up miss, down/down hit, flat/flat hit.
    assert directional_accuracy(point, observed, last_value) == pytest.approx(3 / 4)
    with pytest.raises(ValueError, match="last_value"):
        directional_accuracy(point, observed, np.zeros(3))


# --------------------------------------------------------------------------------------------------
# Valid prediction time


def lorenz_like_truth(horizon, channels=3):
    t = np.arange(horizon)[:, None]
    return np.sin(0.3 * t + np.arange(channels)) * (1 + np.arange(channels))


@pytest.mark.parametrize("diverge_after", [0, 1, 7, 39])
@pytest.mark.parametrize(("dt", "lyapunov_exponent"), [(1.0, 1.0), (0.01, 0.9056), (0.25, 0.07)])
def test_vpt_equals_known_divergence_time(diverge_after, dt, lyapunov_exponent):
    horizon = 40
    truth = lorenz_like_truth(horizon)
    forecast = truth.copy()
    forecast[diverge_after:] += 5.0  # steps 1..k exact, step k+1 onwards far off
    vpt = valid_prediction_time(forecast, truth, lyapunov_exponent, dt=dt, scale=np.ones(3))
    assert vpt == diverge_after * dt * lyapunov_exponent


def test_vpt_never_exceeded_is_full_horizon():
    truth = lorenz_like_truth(25)
    vpt = valid_prediction_time(truth + 0.01, truth, 0.5, dt=0.1, scale=np.ones(3))
    assert vpt == pytest.approx(25 * 0.1 * 0.5)


def test_vpt_threshold_is_strict_and_normalised_per_channel():
    truth = np.zeros((4, 2))
    forecast = np.zeros((4, 2))
    scale = np.array([1.0, 10.0])
    # channel errors (0.4, 4.0) normalise to (0.4, 0.4): e = 0.4, not above the threshold 0.4.
    forecast[1] = [0.4, 4.0]
    forecast[2] = [0.5, 5.0]  # e = 0.5 > 0.4: the forecast was valid for 2 steps
    np.testing.assert_allclose(normalised_error(forecast, truth, scale), [0.0, 0.4, 0.5, 0.0])
    assert valid_prediction_time(forecast, truth, 1.0, scale=scale) == 2.0


def test_vpt_default_scale_is_truth_std():
    truth = np.array([[0.0], [2.0], [0.0], [2.0]])  # std 1
    forecast = truth + np.array([[0.0], [0.3], [0.6], [0.0]])
    np.testing.assert_allclose(normalised_error(forecast, truth), [0.0, 0.3, 0.6, 0.0])
    assert valid_prediction_time(forecast, truth, 2.0) == pytest.approx(2 * 2.0)


def test_vpt_validates():
    truth = np.zeros((5, 2))
    with pytest.raises(ValueError, match="lyapunov_exponent"):
        valid_prediction_time(truth, truth, 0.0, scale=np.ones(2))
    with pytest.raises(ValueError, match="scale must have shape"):
        valid_prediction_time(truth, truth, 1.0, scale=np.ones(3))
    with pytest.raises(ValueError, match="forecast has shape"):
        valid_prediction_time(np.zeros((4, 2)), truth, 1.0, scale=np.ones(2))
    with pytest.raises(ValueError, match="scale must be positive"):
        valid_prediction_time(truth, truth, 1.0)  # a constant truth has std 0
