"""Tests for chaosfm.forecasters._har: the range-based daily variance, the HAR design and OLS, the
fitted coefficients on a simulated HAR, and the Student-t price paths."""

import math

import jax
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from chaosfm.data import MissingColumnError, load, validate
from chaosfm.forecasters import FORECASTERS, HarRV, make_forecaster
from chaosfm.forecasters._har import (
    garman_klass_variance,
    har_design,
    har_targets,
    realized_variance,
    student_t_dof,
)

GK_CLOSE_WEIGHT = 2 * math.log(2) - 1


def candle_frame(candles: np.ndarray, asset: str = "sim") -> pd.DataFrame:
    """A validated market frame from ``(T, 4)`` open, high, low, close."""
    candles = np.asarray(candles, dtype=np.float64)
    return validate(pd.DataFrame({
        "asset": asset,
        "timestamp": pd.bdate_range("2000-01-03", periods=len(candles)),
        "open": candles[:, 0], "high": candles[:, 1], "low": candles[:, 2], "close": candles[:, 3],
        "volume": 1.0,
    }))


def candles_with_variance(variance: np.ndarray, seed: int) -> np.ndarray:
    """``(N + 1, 4)`` candles whose daily variance (overnight gap + Garman–Klass) is ``variance``.

    Each day opens at the previous close; its body ``c`` is a random fraction of ``sqrt(RV)``
    (``|c| <= 2 sqrt(RV)``, inside the range) and its range solves ``0.5 R^2 - w c^2 = RV``.
    """
    rng = np.random.default_rng(seed)
    body = 0.5 * np.sqrt(variance) * np.clip(rng.standard_normal(len(variance)), -4, 4)
    log_range = np.sqrt(2 * (variance + GK_CLOSE_WEIGHT * body**2))
    low = np.minimum(0, body) - (log_range - np.abs(body)) / 2  # relative to the open
    rows, close = [[100.0, 100.0, 100.0, 100.0]], 100.0
    for c, r, lo in zip(body, log_range, low):
        rows.append([close, close * math.exp(lo + r), close * math.exp(lo), close * math.exp(c)])
        close = rows[-1][3]
    return np.array(rows)


def simulate_har(n: int, coefficients, residual_sd: float, seed: int, burn_in: int = 300) -> np.ndarray:
    """Daily variances ``(n,)`` from ``log RV_{t+1} = b0 + bd log RV_t + bw log mean5 + bm log mean22 + e``,
    by a plain loop (independent of the package's design code)."""
    rng = np.random.default_rng(seed)
    b0, bd, bw, bm = coefficients
    level = b0 / (1 - bd - bw - bm)
    rv = [math.exp(level)] * 22
    for _ in range(burn_in + n):
        log_next = (b0 + bd * math.log(rv[-1]) + bw * math.log(np.mean(rv[-5:]))
                    + bm * math.log(np.mean(rv[-22:])) + residual_sd * rng.standard_normal())
        rv.append(math.exp(log_next))
    return np.array(rv[-n:])


@pytest.fixture(scope="module")
def sp500_train():
    frame = load("sp500")
    return frame[(frame["timestamp"] >= "2010-01-01") & (frame["timestamp"] <= "2014-12-31")].reset_index(drop=True)


# --------------------------------------------------------------------------- realized variance


def test_garman_klass_matches_the_published_formula_worked_by_hand():
    # (open, high, low, close) and 0.5 ln(H/L)^2 - (2 ln 2 - 1) ln(C/O)^2 written out per candle
    candles = [(100.0, 110.0, 95.0, 105.0), (50.0, 51.0, 48.0, 48.5), (20.0, 20.0, 20.0, 20.0), (10.0, 10.4, 9.9, 10.0)]
    expected = [0.5 * math.log(h / lo) ** 2 - GK_CLOSE_WEIGHT * math.log(c / o) ** 2 for o, h, lo, c in candles]
    got = garman_klass_variance(*np.array(candles).T)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    # the first candle by hand: ln(110/95) = 0.1466035, ln(1.05) = 0.0487902
    assert got[0] == pytest.approx(0.5 * 0.1466035**2 - 0.3862944 * 0.0487902**2, rel=1e-5)
    assert got[2] == 0.0 and np.all(got >= 0)


def test_realized_variance_adds_the_squared_overnight_gap_and_fills_flat_days():
    candles = np.array([
        (100.0, 101.0, 99.0, 100.0),
        (102.0, 104.0, 101.0, 103.0),   # gaps up 2% from the previous close
        (103.0, 103.0, 103.0, 103.0),   # flat and opens at the close: zero variance
        (101.0, 102.0, 100.0, 101.5),
    ])
    variance = realized_variance(candles)
    day1 = math.log(102 / 100) ** 2 + 0.5 * math.log(104 / 101) ** 2 - GK_CLOSE_WEIGHT * math.log(103 / 102) ** 2
    day3 = math.log(101 / 103) ** 2 + 0.5 * math.log(102 / 100) ** 2 - GK_CLOSE_WEIGHT * math.log(101.5 / 101) ** 2
    np.testing.assert_allclose(variance, [day1, day1, day3], rtol=1e-12)  # the flat day repeats day 1
    leading = np.array([(100.0, 100.0, 100.0, 100.0), (100.0, 100.0, 100.0, 100.0), (100.0, 101.0, 99.0, 100.5)])
    assert realized_variance(leading)[0] == realized_variance(leading)[1] > 0
    with pytest.raises(ValueError, match="variance is zero"):
        realized_variance(np.full((5, 4), 7.0))
    with pytest.raises(ValueError, match="at least 2 candles"):
        realized_variance(np.ones((1, 4)))


# ------------------------------------------------------------------------------ design and OLS


def test_design_and_targets_match_pandas_rolling_means():
    variance = np.random.default_rng(1).lognormal(-9, 0.6, 80)
    series = pd.Series(variance)
    design = har_design(variance)
    assert design.shape == (80 - 21, 4)
    np.testing.assert_allclose(design[:, 0], 1.0)
    np.testing.assert_allclose(design[:, 1], np.log(variance[21:]))
    np.testing.assert_allclose(design[:, 2], np.log(series.rolling(5).mean().to_numpy()[21:]), rtol=1e-12)
    np.testing.assert_allclose(design[:, 3], np.log(series.rolling(22).mean().to_numpy()[21:]), rtol=1e-12)
    targets = har_targets(variance, 4)
    for h in range(1, 5):
        ahead = series[::-1].rolling(h).mean()[::-1].shift(-1).to_numpy()  # mean of days t+1..t+h
        np.testing.assert_allclose(targets[:, h - 1], np.log(ahead[21:]), rtol=1e-12)


def test_ols_coefficients_match_lstsq_on_the_same_design(sp500_train):
    model = HarRV(max_horizon=5).fit(sp500_train)
    candles = sp500_train[["open", "high", "low", "close"]].to_numpy()
    series = pd.Series(realized_variance(candles))
    design = np.column_stack([
        np.ones(len(series)), np.log(series), np.log(series.rolling(5).mean()), np.log(series.rolling(22).mean()),
    ])
    estimate = model.parameters["sp500"]
    for h in range(1, 6):
        target = np.log(series[::-1].rolling(h).mean()[::-1].shift(-1).to_numpy())
        rows = np.arange(21, len(series) - h)
        solution, residual, *_ = np.linalg.lstsq(design[rows], target[rows], rcond=None)
        np.testing.assert_allclose(estimate.coefficients[h - 1], solution, rtol=1e-8, atol=1e-10)
        assert estimate.residual_variance[h - 1] == pytest.approx(residual[0] / (len(rows) - 4), rel=1e-8)
    assert model.pooled_parameters is estimate  # one asset: the pooled fit is its own
    # the shocks: day t+1's close-to-close return over the one-day forecast made on day t
    returns = np.diff(np.log(candles[:, 3]))  # day i's return, beside day i's variance
    rows = np.arange(21, len(series) - 1)
    one_day = np.exp(design[rows] @ estimate.coefficients[0] + estimate.residual_variance[0] / 2)
    mean_return = returns[rows + 1].mean()
    standardized = (returns[rows + 1] - mean_return) / np.sqrt(one_day)
    assert estimate.mean_return == pytest.approx(mean_return, rel=1e-10)
    assert estimate.variance_scale == pytest.approx(np.mean(standardized**2), rel=1e-10)
    assert estimate.nu == pytest.approx(student_t_dof(standardized / np.sqrt(np.mean(standardized**2))), rel=1e-6)
    assert HarRV(max_horizon=5, mean="zero").fit(sp500_train).parameters["sp500"].mean_return == 0.0


def test_fit_recovers_the_coefficients_of_a_simulated_har():
    truth = np.array([-0.92, 0.4, 0.3, 0.2])  # stationary: slopes sum to 0.9, mean log RV -9.2
    variance = simulate_har(4000, truth, residual_sd=0.5, seed=3)
    frame = candle_frame(candles_with_variance(variance, seed=4))
    np.testing.assert_allclose(realized_variance(frame[["open", "high", "low", "close"]].to_numpy()), variance,
                               rtol=1e-8)
    estimate = HarRV(max_horizon=1, min_fit_days=100).fit(frame).parameters["sim"]
    # over seeds the estimates spread by 0.01-0.025 (slopes), 0.17 (constant), 3% (residual variance)
    np.testing.assert_allclose(estimate.coefficients[0, 1:], truth[1:], atol=0.1)
    assert estimate.coefficients[0, 0] == pytest.approx(truth[0], abs=0.5)
    assert estimate.residual_variance[0] == pytest.approx(0.25, rel=0.08)


def test_student_t_dof_recovers_nu_of_unit_variance_t_draws():
    nu = 5.0
    draws = np.random.default_rng(7).standard_t(nu, 20000) * math.sqrt((nu - 2) / nu)
    assert student_t_dof(draws) == pytest.approx(nu, abs=0.8)
    assert student_t_dof(np.random.default_rng(8).standard_normal(20000)) > 30  # a normal: nu large


# ---------------------------------------------------------------------------------- forecast


def test_step_one_quantiles_are_the_student_t_quantiles_of_the_forecast_vol(sp500_train):
    model = HarRV(max_horizon=5).fit(sp500_train)
    context = sp500_train.iloc[-100:]
    estimate = model.parameters["sp500"]
    # the forecast variance by hand: the last day's regressors from pandas rolling means
    series = pd.Series(realized_variance(context[["open", "high", "low", "close"]].to_numpy()))
    row = np.array([1.0, np.log(series.iloc[-1]), np.log(series.iloc[-5:].mean()), np.log(series.iloc[-22:].mean())])
    mean_variance = estimate.variance_scale * np.exp(estimate.coefficients @ row + estimate.residual_variance / 2)
    daily, used = model.daily_variance(context, 5)
    assert used is estimate
    np.testing.assert_allclose(np.cumsum(daily), np.arange(1, 6) * mean_variance, rtol=1e-12)

    forecast = model.forecast(context, 5, 200_000, key=jax.random.key(0))
    assert forecast.samples.shape == (200_000, 5, 1) and forecast.columns == ["close"]
    levels = np.array([0.02, 0.1, 0.25, 0.5, 0.75, 0.9, 0.98])
    nu, last = estimate.nu, context["close"].iloc[-1]
    sd = math.sqrt(mean_variance[0])
    analytic = estimate.mean_return + sd * math.sqrt((nu - 2) / nu) * stats.t.ppf(levels, nu)
    sampled = np.log(forecast.quantile(levels)[:, 0, 0] / last)
    np.testing.assert_allclose(sampled, analytic, atol=0.02 * sd)  # ~4 Monte Carlo standard errors
    # step 5: the log return's variance is 5 A_5
    log_five = np.log(forecast.samples[:, 4, 0] / last)
    assert log_five.var() == pytest.approx(5 * mean_variance[4], rel=0.03)


def test_same_key_same_paths_other_key_other_paths(sp500_train):
    model = HarRV(max_horizon=5).fit(sp500_train)
    context = sp500_train.iloc[-60:]
    first = model.forecast(context, 5, 50, key=jax.random.key(11)).samples
    np.testing.assert_array_equal(first, model.forecast(context, 5, 50, key=jax.random.key(11)).samples)
    assert not np.allclose(first, model.forecast(context, 5, 50, key=jax.random.key(12)).samples)
    with pytest.raises(ValueError, match="stochastic"):
        model.forecast(context, 5, 50)


def test_unseen_and_short_assets_use_the_pooled_fit(sp500_train):
    long_ = sp500_train.assign(asset="long")
    short = sp500_train.iloc[:200].assign(asset="short")
    frame = validate(pd.concat([long_, short], ignore_index=True))
    model = HarRV(max_horizon=5).fit(frame)
    assert set(model.parameters) == {"long"}
    assert set(model.trained_through) == {"long", "short"}
    pooled = model.pooled_parameters
    assert not np.allclose(pooled.coefficients, model.parameters["long"].coefficients)
    context = sp500_train.iloc[-40:]
    assert model.daily_variance(context.assign(asset="short"), 3)[1] is pooled
    assert model.daily_variance(context.assign(asset="unseen"), 3)[1] is pooled
    assert model.daily_variance(context.assign(asset="long"), 3)[1] is model.parameters["long"]


def test_registered_as_har_rv():
    assert FORECASTERS["har_rv"] is HarRV and HarRV.kinds == ("market",)
    assert make_forecaster("har_rv", max_horizon=5).max_horizon == 5


# ------------------------------------------------------------------------------------ errors


def test_errors_name_the_missing_columns_and_the_row_counts(sp500_train):
    close_only = sp500_train[["asset", "timestamp", "close"]]
    with pytest.raises(MissingColumnError, match="har_rv .*needs open, high and low columns; this frame has close only"):
        HarRV().fit(close_only)
    with pytest.raises(ValueError, match="min_fit_days=250 days .* has 99"):
        HarRV().fit(sp500_train.iloc[:100])
    with pytest.raises(ValueError, match="min_fit_days must be"):
        HarRV(max_horizon=22, min_fit_days=40)
    model = HarRV(max_horizon=5).fit(sp500_train)
    with pytest.raises(MissingColumnError, match="har_rv .*needs open, high and low columns; this frame lacks high, low"):
        model.forecast(sp500_train.iloc[-60:].drop(columns=["high", "low"]), 5, 10, key=jax.random.key(0))
    with pytest.raises(ValueError, match="context has 22 rows; HarRV needs at least 23"):
        model.forecast(sp500_train.iloc[-22:], 5, 10, key=jax.random.key(0))
    with pytest.raises(ValueError, match="max_horizon=5; asked for 6"):
        model.forecast(sp500_train.iloc[-60:], 6, 10, key=jax.random.key(0))
    trajectory = pd.DataFrame({"asset": "a", "timestamp": np.arange(300), "x0": np.sin(np.arange(300.0))})
    with pytest.raises(ValueError, match="supports market frames"):
        HarRV().fit(trajectory)
    with pytest.raises(RuntimeError, match="before fit"):
        HarRV().forecast(sp500_train.iloc[-60:], 5, 10, key=jax.random.key(0))
