"""Tests for chaosfm.forecasters._calibrate: split conformal, ACI and AgACI on sample paths."""

import jax
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from chaosfm._random import numpy_rng
from chaosfm.data import validate
from chaosfm.forecasters import ACI_LEVELS, AbstractForecaster, ConformalForecaster, Forecast, make_forecaster


def walk_frame(increments: np.ndarray, asset: str = "walk") -> pd.DataFrame:
    """A validated trajectory frame: the running sum of ``increments``."""
    frame = pd.DataFrame({"asset": asset, "timestamp": np.arange(len(increments)), "x0": np.cumsum(increments)})
    return validate(frame)


class ScaledWalk(AbstractForecaster):
    """A Gaussian random walk forecaster with a fixed, deliberately wrong step scale."""

    name = "scaled_walk"
    kinds = ("trajectory",)

    def __init__(self, scale: float):
        self.scale = scale

    def fit(self, frame):
        self.trained_through = {a: p["timestamp"].iloc[-1] for a, p in frame.groupby("asset")}
        return self

    def forecast(self, context, horizon, num_samples, *, key=None):
        rng = numpy_rng(key)
        last = float(context["x0"].iloc[-1])
        paths = last + np.cumsum(self.scale * rng.standard_normal((num_samples, horizon)), axis=1)
        return Forecast(paths, ["x0"], asset=str(context["asset"].iloc[0]))


def coverage_after(forecaster, frame, start, horizon, windows, level, key):
    """Central-interval coverage of ``forecaster`` over ``windows`` origins from row ``start``."""
    values = frame["x0"].to_numpy()
    inside = []
    for i, origin in enumerate(range(start, start + windows * horizon, horizon)):
        forecast = forecaster.forecast(frame.iloc[origin - 64 : origin], horizon, 400, key=jax.random.fold_in(key, i))
        low, high = forecast.quantile([(1 - level) / 2, (1 + level) / 2])
        truth = values[origin : origin + horizon, None]
        inside.append((truth >= low) & (truth <= high))
    return float(np.mean(inside))


def test_split_conformal_recovers_the_true_quantiles_of_a_miscalibrated_model(key):
    # A unit Gaussian walk forecast with half the true scale: raw 80% intervals cover ~0.42.
    frame = walk_frame(np.random.default_rng(0).standard_normal(4000))
    train = frame.iloc[:3000]
    model = ConformalForecaster(ScaledWalk(0.5), method="split", calibration_fraction=0.5,
                                max_calibration_windows=1400, calibration_samples=400).fit(train)
    forecast = model.forecast(train.iloc[-64:], 3, 4000, key=key)
    last = train["x0"].iloc[-1]
    for h in range(3):
        for level in (0.1, 0.25, 0.75, 0.9):
            truth = last + stats.norm.ppf(level) * np.sqrt(h + 1)
            assert forecast.quantile(level)[h, 0] == pytest.approx(truth, abs=0.12 * np.sqrt(h + 1))
    raw = coverage_after(ScaledWalk(0.5).fit(train), frame, 3000, 4, 240, 0.8, key)
    calibrated = coverage_after(model, frame, 3000, 4, 240, 0.8, key)
    assert raw < 0.55
    assert abs(calibrated - 0.8) < 0.04


def test_conformal_quantile_is_the_finite_sample_order_statistic(key):
    # A point model (spread 0): scores are the raw residuals, and the level-tau quantile is the
    # ceil((n + 1) tau)-th smallest residual above the median, floor((n + 1) tau)-th below.
    frame = walk_frame(np.random.default_rng(1).standard_normal(300))
    model = ConformalForecaster(make_forecaster("last_value"), calibration_fraction=0.25,
                                max_calibration_windows=1000, scale="spread").fit(frame)
    calibration = model.calibration(1)
    values = frame["x0"].to_numpy()
    first = 300 - 75
    residuals = np.sort(values[first:] - values[first - 1 : -1])
    n = len(residuals)
    assert calibration.n_windows == n and calibration.scale[0, 0] == -1
    forecast = model.forecast(frame.iloc[-64:], 1, 99, key=key)
    samples = np.sort(forecast.samples[:, 0, 0])
    for s, value in enumerate(samples):
        u = (s + 0.5) / 99
        rank = int(np.ceil((n + 1) * u)) if u >= 0.5 else int(np.floor((n + 1) * u))
        rank = min(max(rank, 1), n)
        assert value == pytest.approx(values[-1] + residuals[rank - 1])


def test_auto_scale_gives_a_point_model_the_contexts_volatility_and_follows_a_volatility_shift(key):
    # last_value has no spread: "auto" scales its residuals by the context's recent volatility,
    # so its interval doubles where the volatility does, with no online feedback at all.
    rng = np.random.default_rng(6)
    frame = walk_frame(np.concatenate([rng.standard_normal(2000), 3.0 * rng.standard_normal(2000)]))
    train = frame.iloc[:2000]
    model = ConformalForecaster(make_forecaster("last_value"), method="split").fit(train)
    calibration = model.calibration(2)
    assert calibration.scale.tolist() == [[1], [1]]  # SCALES[1] == "volatility"
    np.testing.assert_allclose(calibration.scores[:, 1, 0].std(), 1.0, atol=0.15)  # z ~ N(0, 1)
    calm = model.forecast(train.iloc[-64:], 2, 400, key=key)
    wild = model.forecast(frame.iloc[2200:2264], 2, 400, key=key)
    ratio = np.subtract(*wild.quantile([0.9, 0.1])) / np.subtract(*calm.quantile([0.9, 0.1]))
    assert 2.0 < ratio[1, 0] < 4.5
    assert abs(coverage_after(model, frame, 2100, 2, 500, 0.8, key) - 0.8) < 0.05
    fixed = ConformalForecaster(make_forecaster("last_value"), scale="spread").fit(train)
    assert coverage_after(fixed, frame, 2100, 2, 500, 0.8, key) < 0.45


def test_calibrated_paths_keep_the_models_ordering(key):
    frame = walk_frame(np.random.default_rng(2).standard_normal(1500))
    model = ConformalForecaster(ScaledWalk(0.5), calibration_fraction=0.3).fit(frame)
    raw = ScaledWalk(0.5).forecast(frame.iloc[-64:], 4, 200, key=key).samples
    calibrated = model.forecast(frame.iloc[-64:], 4, 200, key=key).samples
    assert not np.allclose(raw, calibrated)
    np.testing.assert_array_equal(np.argsort(raw, axis=0), np.argsort(calibrated, axis=0))


@pytest.mark.parametrize("method", ["aci", "agaci"])
def test_adaptive_conformal_recovers_coverage_after_a_volatility_shift(method, key):
    # Calibrated at unit volatility, tested where it doubled: split conformal stays too narrow,
    # the adaptive levels widen the interval as the misses come in.
    rng = np.random.default_rng(3)
    increments = np.concatenate([rng.standard_normal(2000), 2.0 * rng.standard_normal(3000)])
    frame = walk_frame(increments)
    train = frame.iloc[:2000]
    split = ConformalForecaster(ScaledWalk(1.0), method="split").fit(train)
    adaptive = ConformalForecaster(ScaledWalk(1.0), method=method, gamma=0.02).fit(train)
    split_coverage = coverage_after(split, frame, 2100, 2, 600, 0.8, key)
    adaptive_coverage = coverage_after(adaptive, frame, 2100, 2, 600, 0.8, key)
    assert split_coverage < 0.6
    assert adaptive_coverage > split_coverage + 0.1
    assert abs(adaptive_coverage - 0.8) < 0.08


def test_bad_arguments_are_named(key):
    with pytest.raises(ValueError, match="method must be one of split, aci, agaci"):
        ConformalForecaster(ScaledWalk(1.0), method="cqr")
    with pytest.raises(ValueError, match="scale must be one of auto, spread, volatility"):
        ConformalForecaster(ScaledWalk(1.0), scale="range")
    with pytest.raises(ValueError, match="calibration_fraction"):
        ConformalForecaster(ScaledWalk(1.0), calibration_fraction=1.5)
    with pytest.raises(ValueError, match=r"agaci_gammas must be step sizes in \(0, 1\), got \[0.0, 1.0\]"):
        ConformalForecaster(ScaledWalk(1.0), method="agaci", agaci_gammas=[0, 1])
    assert ConformalForecaster(ScaledWalk(1.0), method="agaci", agaci_gammas=[0.01, 0.09]).gammas == (0.01, 0.09)
    short = walk_frame(np.random.default_rng(4).standard_normal(90))
    with pytest.raises(ValueError, match="min_context=64"):
        ConformalForecaster(ScaledWalk(1.0), calibration_fraction=0.5).fit(short)
    small = walk_frame(np.random.default_rng(4).standard_normal(100))
    model = ConformalForecaster(ScaledWalk(1.0), calibration_fraction=0.1).fit(small)
    with pytest.raises(ValueError, match="at least 20 are needed"):
        model.forecast(small.iloc[-64:], 5, 10, key=key)
    with pytest.raises(ValueError, match="stochastic"):
        model.forecast(small.iloc[-64:], 5, 10)


def test_name_kinds_and_trained_through_follow_the_base():
    frame = walk_frame(np.random.default_rng(5).standard_normal(400))
    model = ConformalForecaster(ScaledWalk(1.0), method="aci").fit(frame)
    assert model.name == "scaled_walk+aci" and model.kinds == ("trajectory",)
    assert model.trained_through == {"walk": 399}


def test_auto_scale_prefers_the_volatility_when_the_models_spread_ignores_clustering():
    # A GARCH-like series forecast with a constant spread: the context's volatility tracks the
    # error's size, so "auto" takes it, and its calibrated quantiles score better out of sample.
    rng = np.random.default_rng(7)
    sigma = np.exp(np.repeat(rng.normal(0.0, 0.6, 60), 50))  # volatility regimes of 50 rows
    frame = walk_frame(sigma * rng.standard_normal(len(sigma)))
    train = frame.iloc[:2000]
    auto = ConformalForecaster(ScaledWalk(1.0), calibration_fraction=0.5, max_calibration_windows=1000).fit(train)
    spread = ConformalForecaster(ScaledWalk(1.0), calibration_fraction=0.5, max_calibration_windows=1000,
                                 scale="spread").fit(train)
    assert auto.calibration(1).scale.tolist() == [[1]] and spread.calibration(1).scale.tolist() == [[0]]
    values = frame["x0"].to_numpy()
    losses = {"auto": [], "spread": []}
    for i, origin in enumerate(range(2100, 2900, 4)):
        for name, model in (("auto", auto), ("spread", spread)):
            forecast = model.forecast(frame.iloc[origin - 64 : origin], 1, 200, key=jax.random.fold_in(key_of(i), 0))
            error = values[origin] - forecast.quantile(list(ACI_LEVELS))[:, 0, 0]
            tau = np.asarray(ACI_LEVELS)
            losses[name].append(np.mean(np.maximum(tau * error, (tau - 1) * error)))
    assert np.mean(losses["auto"]) < 0.95 * np.mean(losses["spread"])


def key_of(i):
    return jax.random.key(i)


def test_a_base_already_fitted_on_the_rows_is_not_fitted_again():
    class Counting(ScaledWalk):
        fits = 0

        def fit(self, frame):
            type(self).fits += 1
            return super().fit(frame)

    frame = walk_frame(np.random.default_rng(8).standard_normal(400))
    raw = Counting(1.0).fit(frame)
    model = ConformalForecaster(raw, calibration_fraction=0.3).fit(frame)
    assert Counting.fits == 2  # the raw fit and the calibration copy's, not a third
    assert model.base is raw and model.trained_through == raw.trained_through
    ConformalForecaster(Counting(1.0), calibration_fraction=0.3).fit(frame)
    assert Counting.fits == 4  # an unfitted base is fitted on every row
