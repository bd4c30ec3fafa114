"""WalkForwardValidator: folds, the no-data-after-the-cutoff guarantee, scores against numpy."""

import jax
import numpy as np
import pandas as pd
import pytest

from chaosfm.data import LeakageError, trained_through
from chaosfm.evaluate import AbstractForecaster, Forecast, WalkForwardValidator


def market(n=120, seed=0):
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(0.01 * rng.standard_normal(n)))
    return pd.DataFrame({
        "asset": "A",
        "timestamp": pd.date_range("2020-01-01", periods=n, freq="D"),
        "open": close, "high": close * 1.01, "low": close * 0.99, "close": close, "volume": 1.0,
    })


class Spy(AbstractForecaster):
    """Records the latest timestamp it was ever shown; forecasts the last close, with noise."""

    name = "spy"
    seen: list = []

    def fit(self, frame):
        Spy.seen.append(("fit", frame["timestamp"].max(), len(frame)))
        self.trained_through = trained_through(frame)
        return self

    def forecast(self, context, horizon, num_samples, *, key=None):
        Spy.seen.append(("forecast", context["timestamp"].max(), len(context)))
        last = context["close"].iloc[-1]
        noise = np.asarray(jax.random.normal(key, (num_samples, horizon)))
        return Forecast(last + noise, ["close"])


class Tripwire(AbstractForecaster):
    """``fit`` raises if any row is at or after the first timestamp of its fold's test block."""

    name = "tripwire"

    def __init__(self, forbidden_from):
        self.forbidden_from = forbidden_from

    def fit(self, frame):
        if (frame["timestamp"] >= self.forbidden_from).any():
            raise AssertionError(f"fit saw {frame['timestamp'].max()} >= {self.forbidden_from}")
        self.trained_through = trained_through(frame)
        return self

    def forecast(self, context, horizon, num_samples, *, key=None):
        if (context["timestamp"] >= self.forbidden_from).any():
            raise AssertionError("forecast context crosses the cutoff")
        return Forecast(np.full((num_samples, horizon), context["close"].iloc[-1]), ["close"])


class Cheat(Spy):
    """Claims to have seen a day past its training data."""

    name = "cheat"

    def fit(self, frame):
        super().fit(frame)
        self.trained_through = {"A": frame["timestamp"].max() + pd.Timedelta(days=1)}
        return self


def test_folds_are_rolling_windows_followed_by_the_horizon():
    frame = market(60)
    validator = WalkForwardValidator(max_memory=20, horizon=5, step=10)
    folds = list(validator.split(frame))
    assert len(folds) == validator.n_folds(frame) == 4  # cutoffs at rows 19, 29, 39, 49
    for i, (cutoff, train, test) in enumerate(folds):
        assert len(train) == 20 and len(test) == 5
        assert train["timestamp"].iloc[-1] == cutoff == frame["timestamp"].iloc[19 + 10 * i]
        assert (train["timestamp"] <= cutoff).all() and (test["timestamp"] > cutoff).all()
        assert test["timestamp"].iloc[0] == frame["timestamp"].iloc[20 + 10 * i]  # the next rows


def test_max_folds_keeps_evenly_spaced_folds_including_the_last():
    frame = market(120)
    validator = WalkForwardValidator(max_memory=20, horizon=5, max_folds=3)
    cutoffs = [fold.cutoff for fold in validator.split(frame)]
    all_cutoffs = [fold.cutoff for fold in WalkForwardValidator(20, 5).split(frame)]
    assert len(cutoffs) == 3 and cutoffs[0] == all_cutoffs[0] and cutoffs[-1] == all_cutoffs[-1]


def test_fit_and_forecast_never_see_a_row_after_the_cutoff():
    frame = market(80)
    validator = WalkForwardValidator(max_memory=30, horizon=4, step=7, num_samples=8)
    Spy.seen = []
    folds = list(validator.split(frame))
    scores = list(validator.backtest(Spy, frame))
    assert len(scores) == len(folds) == len(Spy.seen) // 2
    for fold, score, (fit, forecast) in zip(folds, scores, zip(Spy.seen[::2], Spy.seen[1::2])):
        assert score.cutoff == fold.cutoff
        assert fit == ("fit", fold.cutoff, 30) and forecast == ("forecast", fold.cutoff, 30)


def test_a_fit_that_trips_on_post_cutoff_rows_runs_through_every_fold():
    frame = market(80)
    validator = WalkForwardValidator(max_memory=25, horizon=5, step=3, num_samples=4)
    starts = iter([fold.test["timestamp"].iloc[0] for fold in validator.split(frame)])
    scores = list(validator.backtest(lambda: Tripwire(next(starts)), frame))
    assert len(scores) == validator.n_folds(frame) == 17


def test_a_forecaster_claiming_post_cutoff_data_is_a_leakage_error():
    with pytest.raises(LeakageError, match="past the cutoff"):
        list(WalkForwardValidator(max_memory=20, horizon=5).backtest(Cheat, market(40)))


def test_scores_match_numpy_for_a_point_mass_forecast():
    # All samples at the last close: CRPS is |last - y|, averaged over the horizon.
    frame = market(50, seed=3)
    validator = WalkForwardValidator(max_memory=20, horizon=5, metrics=("crps", "mae"), num_samples=3)
    expected = [
        np.mean(np.abs(test["close"].to_numpy() - train["close"].iloc[-1]))
        for _, train, test in validator.split(frame)
    ]
    starts = iter([fold.test["timestamp"].iloc[0] for fold in validator.split(frame)])
    scores = list(validator.backtest(lambda: Tripwire(next(starts)), frame))
    np.testing.assert_allclose([s.scores["crps"] for s in scores], expected, rtol=1e-12)
    np.testing.assert_allclose([s.scores["mae"] for s in scores], expected, rtol=1e-12)


def test_bad_arguments_name_the_problem():
    with pytest.raises(ValueError, match="unknown metric"):
        WalkForwardValidator(20, 5, metrics=("crsp",))
    with pytest.raises(ValueError, match="horizon"):
        WalkForwardValidator(20, 0)
    two = pd.concat([market(40), market(40).assign(asset="B")])
    with pytest.raises(ValueError, match="one asset"):
        list(WalkForwardValidator(20, 5).split(two))
    with pytest.raises(ValueError, match="too short"):
        list(WalkForwardValidator(40, 5).split(market(30)))
