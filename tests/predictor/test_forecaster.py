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
