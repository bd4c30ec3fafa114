"""The online calibration of OnlinePredictorForecaster, against the interval ACI recursion by hand."""

import numpy as np
import pytest

from chaosfm.forecasters import ACI_LEVELS, aci_init
from chaosfm.predictor import OnlinePredictorForecaster
from chaosfm.predictor._forecaster import symmetric_levels


def _drifting(n, seed):
    """Standard normal draws per step and observations drifting up by 0.3 of their spread."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 2000)), 0.3 + rng.standard_normal(n)


def test_symmetric_calibration_is_aci_on_the_central_intervals():
    gamma = 0.02
    forecaster = OnlinePredictorForecaster(calibration_gammas=(gamma,))  # symmetric: the default
    state = aci_init((gamma,), 1, 1)
    draws, observed = _drifting(150, seed=0)
    tau = np.asarray(ACI_LEVELS)
    lower = tau[tau < 0.5].copy()  # the reference: one level per central interval
    for samples, y in zip(draws, observed):
        state = forecaster._calibrate(state, samples, float(y))
        low, high = np.quantile(samples, lower), np.quantile(samples, 1.0 - lower)
        inside = (low < y) & (y <= high)
        lower += gamma / 2.0 * (inside - (1.0 - 2.0 * tau[tau < 0.5]))
    levels = state.levels[0, 0, 0]
    np.testing.assert_allclose(levels[tau < 0.5], lower, atol=1e-12)
    np.testing.assert_allclose(levels[tau > 0.5], 1.0 - lower[::-1], atol=1e-12)
    assert levels[len(tau) // 2] == pytest.approx(0.5, abs=1e-12)  # the median never moves


def test_plain_calibration_moves_the_median_with_a_drift_and_symmetric_levels_undo_it():
    gamma = 0.02
    forecaster = OnlinePredictorForecaster(calibration_gammas=(gamma,), symmetric_calibration=False)
    state = aci_init((gamma,), 1, 1)
    draws, observed = _drifting(150, seed=1)
    for samples, y in zip(draws, observed):
        state = forecaster._calibrate(state, samples, float(y))
    levels = state.levels[0, 0, 0]
    # Observations above the draws' median push its level up (ACI learns the drift).
    assert levels[len(levels) // 2] > 0.6
    folded = symmetric_levels(levels)
    np.testing.assert_allclose(folded + folded[::-1], 1.0, atol=1e-12)
    np.testing.assert_allclose(folded[0], (levels[0] + 1.0 - levels[-1]) / 2.0, atol=1e-12)


def test_default_calibration_judges_each_increment_by_the_normal_quantiles_of_the_ema_scale():
    """With the default draws (all normal, no drift) the levels follow the symmetric ACI recursion
    on the exact quantiles ``scale * Phi^-1(level)`` of the EMA scale, both worked out by hand in
    float64 with scipy's normal: no sampling noise in what a miss is judged by."""
    import pandas as pd
    from scipy import stats

    gamma = 0.02
    rng = np.random.default_rng(3)
    n = 260
    values = 100.0 + np.cumsum(rng.standard_normal(n) * np.where(np.arange(n) < 130, 0.5, 2.0))
    frame = pd.DataFrame({"timestamp": pd.date_range("2020-01-01", periods=n, freq="D"),
                          "asset": "a", "close": values})
    forecaster = OnlinePredictorForecaster(calibration_gammas=(gamma,)).fit(frame)
    state = forecaster.streams["a"].calibration
    updates = int(state.updates[0])
    assert 0 < updates < n - 1  # judged from warm-up on
    tau = np.asarray(ACI_LEVELS)
    lower = tau[tau < 0.5].copy()
    variance, edge = 0.0, 1.0 / 1025
    increments = np.diff(values)
    first = len(increments) - updates
    for k, increment in enumerate(increments):
        if k >= first:
            scale = np.sqrt(variance)
            low = scale * stats.norm.ppf(np.clip(lower, edge, 1 - edge))
            high = scale * stats.norm.ppf(np.clip(1.0 - lower, edge, 1 - edge))
            inside = (low < increment) & (increment <= high)
            lower += gamma / 2.0 * (inside - (1.0 - 2.0 * tau[tau < 0.5]))
        weight = max(forecaster.config.scale_decay, 1.0 / (k + 1))
        variance = (1.0 - weight) * variance + weight * increment**2
    levels = state.levels[0, 0, 0]
    np.testing.assert_allclose(levels[tau < 0.5], lower, atol=1e-9)
    np.testing.assert_allclose(levels[tau > 0.5], 1.0 - lower[::-1], atol=1e-9)
    # The volatility quadrupled halfway: the levels widened the intervals, not only the scale.
    assert not np.allclose(lower, tau[tau < 0.5])
