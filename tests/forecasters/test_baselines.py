"""Tests for chaosfm.forecasters._baselines: LastValue, RandomWalk, SeasonalNaive, AR, GARCH."""

import jax
import numpy as np
import pandas as pd
import pytest

from chaosfm.data import validate
from chaosfm.forecasters import (
    FORECASTERS,
    AutoRegressive,
    Forecast,
    Garch,
    LastValue,
    RandomWalk,
    SeasonalNaive,
    infer_season,
    make_forecaster,
)


def market_frame(prices: dict[str, np.ndarray]) -> pd.DataFrame:
    """A validated market frame with flat candles (open = high = low = close) per asset."""
    parts = []
    for asset, close in prices.items():
        close = np.asarray(close, dtype=np.float64)
        parts.append(pd.DataFrame({
            "asset": asset,
            "timestamp": pd.date_range("2000-01-03", periods=len(close), freq="D"),
            "open": close, "high": close, "low": close, "close": close,
            "volume": np.ones(len(close)),
        }))
    return validate(pd.concat(parts, ignore_index=True))


def trajectory_frame(values: np.ndarray, asset: str = "traj") -> pd.DataFrame:
    values = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    frame = pd.DataFrame({f"x{i}": values[:, i] for i in range(values.shape[1])})
    frame.insert(0, "timestamp", np.arange(len(values)))
    frame.insert(0, "asset", asset)
    return validate(frame)


def random_prices(n: int, seed: int, sigma: float = 0.01) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 100.0 * np.exp(np.cumsum(sigma * rng.standard_normal(n)))


STOCHASTIC = [RandomWalk, SeasonalNaive, AutoRegressive, Garch]


# ---------------------------------------------------------------------------- registry, errors


def test_registry_names_and_make_forecaster():
    assert set(FORECASTERS) == {
        "last_value", "random_walk", "seasonal_naive", "ar", "garch", "context_parroting",
        "esn", "ngrc", "mlp_flow", "flow_mamba", "token_mamba", "token_gpt", "har_rv", "market_model", "online_predictor", "ensemble",
    }
    for name, cls in FORECASTERS.items():
        assert cls.name == name
        assert set(cls.kinds) <= {"market", "trajectory"}
    assert FORECASTERS["garch"].kinds == ("market",)
    assert make_forecaster("ar", order=3).order == 3
    assert make_forecaster("context_parroting", motif_length=7).motif_length == 7
    with pytest.raises(ValueError, match="known forecasters: ar, context_parroting, ensemble, esn, flow_mamba, garch"):
        make_forecaster("prophet")
    with pytest.raises(ValueError, match="takes: order"):
        make_forecaster("ar", lags=3)


@pytest.mark.parametrize(
    ("cls", "option", "bad"),
    [(RandomWalk, "window", 1), (SeasonalNaive, "season", 0), (AutoRegressive, "order", 0),
     (AutoRegressive, "order", 2.5)],
)
def test_bad_options_name_the_argument(cls, option, bad):
    with pytest.raises(ValueError, match=option):
        cls(**{option: bad})


def test_argument_and_context_errors():
    frame = market_frame({"A": random_prices(100, 0)})
    walk = RandomWalk(window=20)
    with pytest.raises(RuntimeError, match="before fit"):
        walk.forecast(frame, 5, 10, key=jax.random.key(0))
    walk.fit(frame)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="horizon"):
        walk.forecast(frame, 0, 10, key=key)
    with pytest.raises(ValueError, match="num_samples"):
        walk.forecast(frame, 5, 0, key=key)
    with pytest.raises(ValueError, match="at least 21"):
        walk.forecast(frame.iloc[:20], 5, 10, key=key)
    two = market_frame({"A": random_prices(50, 0), "B": random_prices(50, 1)})
    with pytest.raises(ValueError, match="one asset"):
        walk.forecast(two, 5, 10, key=key)
    with pytest.raises(ValueError, match="close"):
        walk.forecast(trajectory_frame(np.ones(50)), 5, 10, key=key)
    with pytest.raises(ValueError, match="market"):
        Garch().fit(trajectory_frame(np.sin(np.arange(500.0))))


# ---------------------------------------------------------------------------- shared behaviour


@pytest.mark.parametrize("cls", STOCHASTIC)
def test_market_samples_are_prices_anchored_at_the_last_close(cls):
    prices = {"A": random_prices(600, 1), "B": random_prices(400, 2)}
    model = cls().fit(market_frame(prices))
    assert model.trained_through == {
        "A": pd.Timestamp("2000-01-03") + pd.Timedelta(days=599),
        "B": pd.Timestamp("2000-01-03") + pd.Timedelta(days=399),
    }
    context = market_frame({"B": prices["B"] * 3.0})  # a level the fit never saw
    forecast = model.forecast(context, 10, 500, key=jax.random.key(1))
    assert isinstance(forecast, Forecast)
    assert forecast.samples.shape == (500, 10, 1)
    assert forecast.columns == ["close"] and forecast.asset == "B"
    assert np.all(forecast.samples > 0)
    # One step ahead the median stays within a few daily sigmas (1%) of the last close (of the
    # close one season back for the seasonal naive: 7 rows of these calendar-daily bars).
    last = 3.0 * prices["B"][-(7 if cls is SeasonalNaive else 1)]
    assert abs(np.median(forecast.samples[:, 0, 0]) / last - 1) < 0.01
    assert 0.002 < np.std(np.log(forecast.samples[:, 0, 0] / last)) < 0.05


@pytest.mark.parametrize("cls", STOCHASTIC)
def test_stochastic_baselines_need_a_key_and_repeat_with_it(cls):
    frame = market_frame({"A": random_prices(400, 3)})
    model = cls().fit(frame)
    with pytest.raises(ValueError, match="key"):
        model.forecast(frame, 5, 20)
    first = model.forecast(frame, 5, 20, key=jax.random.key(7)).samples
    again = model.forecast(frame, 5, 20, key=jax.random.key(7)).samples
    other = model.forecast(frame, 5, 20, key=jax.random.key(8)).samples
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


@pytest.mark.parametrize("cls", [RandomWalk, SeasonalNaive, AutoRegressive, LastValue])
def test_trajectory_samples_keep_channels_and_signs(cls):
    t = np.arange(300) * 0.1
    values = np.column_stack([np.sin(t) - 2.0, np.cos(1.3 * t), 0.1 * t])
    model = cls().fit(trajectory_frame(values))
    forecast = model.forecast(trajectory_frame(values), 12, 64, key=jax.random.key(0))
    assert forecast.samples.shape == (64, 12, 3)
    assert forecast.columns == ["x0", "x1", "x2"] and forecast.asset == "traj"
    assert np.all(forecast.samples[:, 0, 0] < 0)  # x0 lives around -2: no log, no clipping


def test_last_value_repeats_the_last_row():
    values = np.column_stack([np.arange(30.0), -np.arange(30.0)])
    forecast = LastValue().fit(trajectory_frame(values)).forecast(trajectory_frame(values), 4, 3)
    np.testing.assert_array_equal(forecast.samples, np.broadcast_to([29.0, -29.0], (3, 4, 2)))
    prices = random_prices(10, 0)
    frame = market_frame({"A": prices})
    samples = LastValue().fit(frame).forecast(frame, 2, 2).samples
    np.testing.assert_array_equal(samples, np.full((2, 2, 1), prices[-1]))


# ---------------------------------------------------------------------------- random walk


def test_random_walk_spread_grows_like_sqrt_h():
    prices = random_prices(200, 4, sigma=0.02)
    frame = market_frame({"A": prices})
    sigma = np.std(np.diff(np.log(prices))[-20:], ddof=1)
    forecast = RandomWalk(window=20).fit(frame).forecast(frame, 25, 20000, key=jax.random.key(2))
    log_moves = np.log(forecast.samples[:, :, 0] / prices[-1])  # (S, H)
    h = np.arange(1, 26)
    np.testing.assert_allclose(log_moves.std(axis=0), sigma * np.sqrt(h), rtol=0.03)
    assert np.all(np.abs(log_moves.mean(axis=0)) < 4 * sigma * np.sqrt(h / 20000))  # zero drift


def test_random_walk_on_trajectories_uses_increments():
    rng = np.random.default_rng(5)
    values = np.column_stack([np.cumsum(0.5 * rng.standard_normal(100)) - 50.0,
                              np.cumsum(2.0 * rng.standard_normal(100))])
    frame = trajectory_frame(values)
    forecast = RandomWalk(window=30).fit(frame).forecast(frame, 9, 20000, key=jax.random.key(3))
    sigma = np.diff(values, axis=0)[-30:].std(axis=0, ddof=1)
    moves = forecast.samples - values[-1]
    np.testing.assert_allclose(moves[:, 8].std(axis=0), 3.0 * sigma, rtol=0.03)
    assert np.all(forecast.samples[:, :, 0] < 0)


# ---------------------------------------------------------------------------- seasonal naive


def test_seasonal_naive_is_exact_on_a_periodic_series():
    season = np.array([100.0, 101.5, 99.0, 102.0, 100.5])
    prices = np.tile(season, 40)  # 200 rows, period 5
    frame = market_frame({"A": prices[:173]})
    model = SeasonalNaive(season=5).fit(frame)
    forecast = model.forecast(frame, 12, 50, key=jax.random.key(0))
    truth = prices[173:185]
    np.testing.assert_allclose(forecast.samples[:, :, 0], np.broadcast_to(truth, (50, 12)), rtol=1e-12)
    np.testing.assert_allclose(model.point(frame, 12)[:, 0], truth, rtol=1e-12)

    wave = np.tile([-3.0, 0.0, 2.5, -1.0, 4.0, 0.5, -2.0], 20)  # period 7, negative values
    traj = trajectory_frame(np.column_stack([wave, 2 * wave]))
    fitted = SeasonalNaive(season=7).fit(traj)
    context = traj.iloc[:100]
    forecast = fitted.forecast(context, 20, 5, key=jax.random.key(1))
    np.testing.assert_array_equal(forecast.samples[:, :, 0], np.broadcast_to(wave[100:120], (5, 20)))
    np.testing.assert_array_equal(forecast.samples[:, :, 1], np.broadcast_to(2 * wave[100:120], (5, 20)))


def test_seasonal_naive_error_variance_grows_with_seasons_passed():
    rng = np.random.default_rng(6)
    values = np.sin(2 * np.pi * np.arange(400) / 4) + 0.3 * rng.standard_normal(400)
    frame = trajectory_frame(values)
    forecast = SeasonalNaive(season=4).fit(frame).forecast(frame, 12, 40000, key=jax.random.key(4))
    errors = values[4:] - values[:-4]
    point = values[-4:][np.arange(12) % 4]
    noise = forecast.samples[:, :, 0] - point
    expected = np.ceil(np.arange(1, 13) / 4) * errors.var()
    np.testing.assert_allclose(noise.var(axis=0), expected, rtol=0.05)
    # The error at step h + season builds on the error at step h of the same path.
    assert np.corrcoef(noise[:, 0], noise[:, 4])[0, 1] > 0.6


def _stamped(stamps) -> pd.DataFrame:
    close = random_prices(len(stamps), 3)
    return validate(pd.DataFrame({"asset": "A", "timestamp": stamps, "open": close, "high": close, "low": close,
                                  "close": close, "volume": 1.0}))


def _session_bars(freq: str, days: int) -> pd.DatetimeIndex:
    """Bars of the 09:30-16:00 session on ``days`` business days."""
    return pd.DatetimeIndex([stamp for day in pd.bdate_range("2021-03-01", periods=days)
                             for stamp in pd.date_range(day + pd.Timedelta("9h30min"), day + pd.Timedelta("15h59min"),
                                                        freq=freq)])


@pytest.mark.parametrize("stamps, season", [
    (pd.bdate_range("2020-01-01", periods=300), 5),  # daily bars, no weekend rows: a trading week
    (pd.date_range("2020-01-01", periods=300, freq="D"), 7),  # daily around the week (crypto)
    (pd.date_range("2020-01-01", periods=24 * 30, freq="h"), 24),  # hourly FX around the clock
    (_session_bars("h", 30), 7),  # 09:30, 10:30, ..., 15:30: 7 hourly bars a session
    (_session_bars("5min", 10), 78),  # 6.5 h / 5 min
    (pd.date_range("2000-01-07", periods=200, freq="W-FRI"), 52),
    (pd.date_range("2000-01-31", periods=120, freq="ME"), 12),
    (pd.date_range("2000-03-31", periods=60, freq="QE"), 4),
    (pd.date_range("2000-12-31", periods=30, freq="YE"), 1),
])
def test_the_season_comes_from_the_spacing_of_the_bars(stamps, season):
    frame = _stamped(stamps)
    assert infer_season(frame) == season
    assert SeasonalNaive().fit(frame).season == season
    assert SeasonalNaive(season=3).fit(frame).season == 3  # a season given is kept


def test_row_indexed_time_has_no_calendar_season():
    assert SeasonalNaive().fit(trajectory_frame(np.sin(np.arange(50.0)))).season == 1


def test_seasonal_naive_short_context_says_how_long():
    frame = trajectory_frame(np.arange(10.0))
    with pytest.raises(ValueError, match="at least 6"):
        SeasonalNaive(season=5).fit(frame).forecast(frame.iloc[:5], 3, 2, key=jax.random.key(0))


# ---------------------------------------------------------------------------- autoregressive


def simulate_ar2(n: int, seed: int, c=0.3, phi=(0.6, -0.25), sigma=0.5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y = np.zeros(n + 100)
    for t in range(2, n + 100):
        y[t] = c + phi[0] * y[t - 1] + phi[1] * y[t - 2] + sigma * rng.standard_normal()
    return y[100:]


def test_ar_least_squares_matches_statsmodels_autoreg():
    from statsmodels.tsa.ar_model import AutoReg

    y = simulate_ar2(3000, 7)
    model = AutoRegressive(order=2).fit(trajectory_frame(y))
    reference = AutoReg(y, lags=2, trend="c").fit()
    np.testing.assert_allclose(model.intercept[0], reference.params[0], rtol=1e-9)
    np.testing.assert_allclose(model.lag_coefficients[0], reference.params[1:], rtol=1e-9)
    resid = reference.resid
    np.testing.assert_allclose(model.residual_std[0], np.sqrt(resid @ resid / (len(resid) - 3)), rtol=1e-9)
    np.testing.assert_allclose(model.lag_coefficients[0], [0.6, -0.25], atol=0.05)


def test_ar_pools_assets_without_lagging_across_them():
    import statsmodels.api as sm

    a, b = simulate_ar2(500, 8), simulate_ar2(300, 9) + 5.0
    frame = pd.concat([trajectory_frame(a, "a"), trajectory_frame(b, "b")], ignore_index=True)
    model = AutoRegressive(order=2).fit(frame)
    rows, targets = [], []
    for series in (a, b):
        for t in range(2, len(series)):
            rows.append([1.0, series[t - 1], series[t - 2]])
            targets.append(series[t])
    reference = sm.OLS(np.array(targets), np.array(rows)).fit()
    np.testing.assert_allclose(model.intercept[0], reference.params[0], rtol=1e-9)
    np.testing.assert_allclose(model.lag_coefficients[0], reference.params[1:], rtol=1e-9)


def test_ar_recursion_without_noise_matches_hand_rollout():
    y = simulate_ar2(400, 10)
    frame = trajectory_frame(np.column_stack([y, -y]))
    model = AutoRegressive(order=2).fit(frame)
    model.residual_std = np.zeros(2)
    samples = model.forecast(frame, 6, 3, key=jax.random.key(0)).samples
    history = list(y)
    for _ in range(6):
        history.append(model.intercept[0] + model.lag_coefficients[0] @ [history[-1], history[-2]])
    np.testing.assert_allclose(samples[:, :, 0], np.broadcast_to(history[-6:], (3, 6)), rtol=1e-12)


def test_ar_on_market_models_log_returns():
    returns = 0.01 * simulate_ar2(2000, 11, c=0.0, phi=(0.5, 0.0), sigma=1.0)
    prices = 50.0 * np.exp(np.cumsum(returns))
    frame = market_frame({"A": prices})
    model = AutoRegressive(order=1).fit(frame)
    assert model.lag_coefficients[0, 0] == pytest.approx(0.5, abs=0.05)
    assert model.residual_std[0] == pytest.approx(0.01, rel=0.05)
    model.residual_std = np.zeros(1)
    path = model.forecast(frame, 3, 1, key=jax.random.key(0)).samples[0, :, 0]
    r, log_price = returns[-1], np.log(prices[-1])
    expected = []
    for _ in range(3):
        r = model.intercept[0] + model.lag_coefficients[0, 0] * r
        log_price += r
        expected.append(np.exp(log_price))
    np.testing.assert_allclose(path, expected, rtol=1e-12)


# ---------------------------------------------------------------------------- GARCH


TRUE_GARCH = {"mu": 0.03, "omega": 0.05, "alpha[1]": 0.10, "beta[1]": 0.85, "nu": 6.0}


def simulate_garch_prices(n: int, seed: int) -> np.ndarray:
    from arch.univariate import GARCH, ConstantMean, StudentsT

    simulator = ConstantMean(
        None, volatility=GARCH(), distribution=StudentsT(seed=np.random.default_rng(seed))
    )
    returns = simulator.simulate(list(TRUE_GARCH.values()), n)["data"].to_numpy()
    return 100.0 * np.exp(np.cumsum(returns) / 100.0)


def test_garch_recovers_simulated_parameters():
    prices = simulate_garch_prices(8000, 12)
    model = Garch().fit(market_frame({"A": prices}))
    params = model.parameters["A"]
    assert list(params.index) == list(TRUE_GARCH)
    assert params["alpha[1]"] == pytest.approx(0.10, abs=0.03)
    assert params["beta[1]"] == pytest.approx(0.85, abs=0.04)
    assert params["omega"] == pytest.approx(0.05, rel=0.5)
    assert params["nu"] == pytest.approx(6.0, abs=1.5)
    assert params["mu"] == pytest.approx(0.03, abs=0.03)
    assert model.pooled_parameters is params


def test_garch_forecast_applies_fitted_parameters_to_the_context():
    prices = simulate_garch_prices(3000, 13)
    model = Garch().fit(market_frame({"A": prices[:2000]}))
    params = model.parameters["A"]
    context = market_frame({"A": prices})  # 1000 rows the fit never saw
    forecast = model.forecast(context, 5, 40000, key=jax.random.key(5))
    # The variance recursion by hand; after 3000 steps its starting value is forgotten.
    r = 100.0 * np.diff(np.log(prices))
    variance = r.var()
    for value in r:
        variance = params["omega"] + params["alpha[1]"] * (value - params["mu"]) ** 2 + params["beta[1]"] * variance
    first = 100.0 * np.log(forecast.samples[:, 0, 0] / prices[-1])
    assert first.std() == pytest.approx(np.sqrt(variance), rel=0.03)
    assert first.mean() == pytest.approx(params["mu"], abs=4 * np.sqrt(variance / 40000))


def test_garch_unseen_and_short_assets_use_the_pooled_fit():
    long_a, long_b = simulate_garch_prices(1500, 14), simulate_garch_prices(1500, 15)
    frame = market_frame({"A": long_a, "B": long_b, "short": long_a[:100]})
    model = Garch(min_fit_returns=250).fit(frame)
    assert set(model.parameters) == {"A", "B"}
    assert not model.pooled_parameters.equals(model.parameters["A"])
    unseen = market_frame({"new": long_b[:300]})
    forecast = model.forecast(unseen, 3, 10, key=jax.random.key(0))
    assert forecast.asset == "new" and np.all(forecast.samples > 0)
    # The same context under a fitted asset's name, whose parameters are swapped for the pooled
    # ones, gives the same paths: the unseen asset was forecast with the pooled parameters.
    model.parameters["A"] = model.pooled_parameters
    as_a = model.forecast(market_frame({"A": long_b[:300]}), 3, 10, key=jax.random.key(0))
    np.testing.assert_array_equal(forecast.samples, as_a.samples)
    with pytest.raises(ValueError, match="min_fit_returns=250"):
        Garch().fit(market_frame({"A": long_a[:100]}))


@pytest.mark.parametrize("name", ["random_walk", "garch", "ar", "last_value", "seasonal_naive", "context_parroting"])
def test_close_only_baselines_forecast_a_close_only_frame(name):
    prices = {"A": random_prices(400, 11), "B": random_prices(400, 12, sigma=0.02)}
    close_only = validate(market_frame(prices)[["asset", "timestamp", "close"]])
    model = make_forecaster(name).fit(close_only)
    context = close_only[close_only["asset"] == "B"].reset_index(drop=True)
    forecast = model.forecast(context, 5, 16, key=jax.random.key(1))
    assert forecast.samples.shape == (16, 5, 1) and np.isfinite(forecast.samples).all()
    assert forecast.asset == "B" and list(forecast.columns) == ["close"]
