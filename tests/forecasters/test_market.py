"""Tests for chaosfm.forecasters._market: the cross-asset quantile model of market returns."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy.special import ndtri

from chaosfm.data import MissingColumnError, validate
from chaosfm.evaluate import coverage, crps
from chaosfm.forecasters import FORECASTERS, CrossAssetForecaster, make_forecaster
from chaosfm.forecasters._market import (
    FEATURE_NAMES,
    MarketModelConfig,
    QuantileNetwork,
    market_inputs,
    pinball_loss,
    quantile_function,
)

# A GARCH(1,1) with Gaussian shocks and known parameters: long-run daily volatility 1%.
ALPHA, BETA = 0.08, 0.90
OMEGA = 1e-4 * (1.0 - ALPHA - BETA)
HORIZON = 5
SMALL = dict(widths=(32,), loss_units=("standardised",), max_steps=300, eval_every=100, batch_size=128, ensemble=2)


def simulate_garch(days: int, seed: int, intraday: int = 32) -> tuple[pd.DataFrame, np.ndarray]:
    """Candles of a GARCH(1,1) log price: each day a Gaussian random walk of ``intraday`` steps with
    the day's variance, opening at the previous close (high and low: the walk's extremes).

    Returns:
        the raw frame (asset ``"sim"``) and ``sigma2`` ``(days + 1,)``: the variance of each day's
        return, the last entry the next day's (known to the true model at the last close).
    """
    rng = np.random.default_rng(seed)
    sigma2 = np.empty(days + 1)
    sigma2[0] = 1e-4
    log_open = np.log(1000.0)
    rows = []
    for t in range(days):
        path = log_open + np.r_[0.0, np.cumsum(rng.standard_normal(intraday))] * np.sqrt(sigma2[t] / intraday)
        close = path[-1]
        rows.append((np.exp(log_open), np.exp(path.max()), np.exp(path.min()), np.exp(close)))
        sigma2[t + 1] = OMEGA + ALPHA * (close - log_open) ** 2 + BETA * sigma2[t]
        log_open = close
    o, h, lo, c = np.array(rows).T
    frame = pd.DataFrame({
        "asset": "sim", "timestamp": pd.bdate_range("2000-01-03", periods=days),
        "open": o, "high": h, "low": lo, "close": c, "volume": 1e6,
    })
    return frame, sigma2


def true_paths(last_close: float, next_variance: float, num_samples: int, rng) -> np.ndarray:
    """``(S, H)`` price paths of the true GARCH from the origin, given the next day's variance."""
    variance = np.full(num_samples, next_variance)
    log_price = np.full(num_samples, np.log(last_close))
    paths = np.empty((num_samples, HORIZON))
    for h in range(HORIZON):
        step = np.sqrt(variance) * rng.standard_normal(num_samples)
        log_price = log_price + step
        paths[:, h] = np.exp(log_price)
        variance = OMEGA + ALPHA * step**2 + BETA * variance
    return paths


@pytest.fixture(scope="module")
def simulated():
    """Two simulated assets; ``a`` has 400 held-out days after its fit rows."""
    frame_a, sigma2_a = simulate_garch(2400, seed=1)
    frame_b, _ = simulate_garch(1600, seed=2)
    frame_b["asset"] = "b"
    frame_a["asset"] = "a"
    fit_rows = 2000
    train = validate(pd.concat([frame_a.iloc[:fit_rows], frame_b], ignore_index=True))
    return train, validate(frame_a), sigma2_a, fit_rows


@pytest.fixture(scope="module")
def fitted(simulated):
    train, *_ = simulated
    return CrossAssetForecaster(**SMALL).fit(train)


def test_head_is_monotone_and_starts_at_the_normal_quantiles():
    config = MarketModelConfig(horizon=3, quantile_count=19)
    network = QuantileNetwork(len(FEATURE_NAMES), 2, 16, config, key=jax.random.key(0))
    features = jax.random.normal(jax.random.key(1), (64, len(FEATURE_NAMES)))
    assets = jnp.arange(64) % 3
    start = jax.vmap(network)(features, assets)  # (64, H, Q)
    expected = np.broadcast_to(ndtri(config.levels()), (64, 3, 19))
    np.testing.assert_allclose(np.asarray(start), expected, rtol=1e-5, atol=1e-5)
    # With a large random last layer the raw outputs are far from zero, yet stay ordered.
    last = network.mlp.layers[-1]
    wild = eqx.tree_at(
        lambda n: (n.mlp.layers[-1].weight, n.mlp.layers[-1].bias), network,
        (10.0 * jax.random.normal(jax.random.key(2), last.weight.shape),
         10.0 * jax.random.normal(jax.random.key(3), last.bias.shape)),
    )
    quantiles = np.asarray(jax.vmap(wild)(features, assets))
    assert quantiles.shape == (64, 3, 19) and np.isfinite(quantiles).all()
    assert (np.diff(quantiles, axis=-1) > 0).all()
    assert np.abs(quantiles - expected).max() > 1.0  # the test would see a head that ignored its input


def test_pinball_loss_matches_a_hand_computed_case():
    quantiles = jnp.array([[[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]])  # (1, H=2, Q=3)
    target = jnp.array([[2.5, -1.0]])
    levels = jnp.array([0.1, 0.5, 0.9])
    # Step 1: y - q = 1.5, 0.5, -0.5 -> 0.1 * 1.5, 0.5 * 0.5, 0.1 * 0.5 = 0.15, 0.25, 0.05.
    # Step 2: y - q = -1 for each -> 0.9, 0.5, 0.1. Mean of the six: 1.95 / 6.
    assert float(pinball_loss(quantiles, target, levels)) == pytest.approx(1.95 / 6, rel=1e-6)


def test_quantile_function_interpolates_and_extends_the_tails():
    levels = np.array([0.25, 0.5, 0.75])
    quantiles = np.array([[-1.0, 0.0, 2.0], [-2.0, 0.0, 4.0]])  # (H=2, Q=3)
    uniforms = np.array([0.5, 0.625, 0.0, 1.0])
    out = quantile_function(quantiles, levels, uniforms)
    np.testing.assert_allclose(out, [[0.0, 0.0], [1.0, 2.0], [-2.0, -4.0], [4.0, 8.0]])


def test_inputs_are_causal_and_defined_after_22_rows(simulated):
    _, frame_a, _, _ = simulated
    part = frame_a.iloc[:300].reset_index(drop=True)
    features, scale = market_inputs(part)
    assert features.shape == (300, len(FEATURE_NAMES)) and scale.shape == (300,)
    assert not np.isfinite(features[21]).all() and np.isfinite(features[22:]).all()
    # Changing a later row leaves every earlier row's inputs as they were.
    changed = part.copy()
    changed.loc[200:, ["open", "high", "low", "close"]] *= 1.3
    again, _ = market_inputs(changed)
    np.testing.assert_array_equal(again[22:200], features[22:200])
    # The scale is a daily volatility near the simulated 1% a day.
    assert 0.004 < np.median(scale[22:]) < 0.02


@pytest.mark.slow  # fits the network (~15 s alone, more on a loaded machine)
def test_fit_and_forecast(simulated, fitted, key):
    train, frame_a, _, _ = simulated
    assert set(fitted.trained_through) == {"a", "b"}
    assert fitted.trained_through["a"] == train.loc[train["asset"] == "a", "timestamp"].max()
    assert fitted.trained_through["b"] == train.loc[train["asset"] == "b", "timestamp"].max()
    assert fitted.chosen_["steps"] in (0, 100, 200, 300) and len(fitted.search_scores_) == 1
    assert len(fitted.models_) == 2
    context = frame_a.iloc[2000:2300]
    forecast = fitted.forecast(context, HORIZON, 64, key=key)
    assert forecast.samples.shape == (64, HORIZON, 1) and forecast.asset == "a"
    assert np.isfinite(forecast.samples).all() and (forecast.samples > 0).all()
    # Comonotone paths: one uniform per path, so each path keeps its rank at every step.
    ranks = np.argsort(np.argsort(forecast.samples[:, :, 0], axis=0), axis=0)
    assert (ranks == ranks[:, :1]).all()
    # Fewer steps than fitted: the first steps of the same quantiles.
    shorter = fitted.forecast(context, 2, 64, key=key)
    np.testing.assert_allclose(shorter.samples, forecast.samples[:, :2])
    # An asset the fit never saw uses the pooled embedding.
    unseen = context.assign(asset="c")
    pooled = fitted.forecast(unseen, HORIZON, 64, key=key)
    assert pooled.asset == "c" and np.isfinite(pooled.samples).all()
    assert not np.allclose(pooled.samples, forecast.samples)


@pytest.mark.slow  # fits the network (~15 s alone, more on a loaded machine)
def test_forecasts_are_reproducible_from_the_key(fitted, simulated):
    _, frame_a, _, _ = simulated
    context = frame_a.iloc[2100:2400]
    first = fitted.forecast(context, HORIZON, 32, key=jax.random.key(7)).samples
    np.testing.assert_array_equal(first, fitted.forecast(context, HORIZON, 32, key=jax.random.key(7)).samples)
    assert not np.array_equal(first, fitted.forecast(context, HORIZON, 32, key=jax.random.key(8)).samples)


@pytest.mark.slow  # fits the network (~15 s alone, more on a loaded machine)
def test_fit_is_reproducible_from_the_seed(simulated):
    train, frame_a, _, _ = simulated
    short = {**SMALL, "max_steps": 100, "ensemble": 1}
    one, two = (CrossAssetForecaster(**short).fit(train) for _ in range(2))
    other = CrossAssetForecaster(**short, seed=1).fit(train)
    assert one.chosen_ == two.chosen_
    context = frame_a.iloc[2000:2100]
    q_one, q_two, q_other = (m.quantiles(context, HORIZON)[0] for m in (one, two, other))
    np.testing.assert_array_equal(q_one, q_two)
    assert not np.array_equal(q_one, q_other)


@pytest.mark.slow  # fits the network (~15 s alone, more on a loaded machine)
def test_calibrated_and_close_to_the_true_model_on_held_out_garch(simulated, fitted):
    """On 400 held-out days of a known GARCH, the 80% interval covers about 80% and the CRPS is
    within a few percent of the true model's (which knows the parameters and the variance)."""
    _, frame_a, sigma2, fit_rows = simulated
    rng = np.random.default_rng(0)
    close = frame_a["close"].to_numpy()
    model_crps, true_crps, covered = [], [], []
    for origin in range(fit_rows + 10, len(frame_a) - HORIZON, 2):
        observed = close[origin : origin + HORIZON]
        context = frame_a.iloc[origin - 300 : origin]
        samples = fitted.forecast(context, HORIZON, 200, key=jax.random.key(origin)).samples[:, :, 0]
        truth = true_paths(close[origin - 1], sigma2[origin], 200, rng)
        model_crps.append(crps(samples, observed).mean())
        true_crps.append(crps(truth, observed).mean())
        covered.append(coverage(samples, observed, level=0.8))
    assert 0.72 < np.mean(covered) < 0.88
    assert np.mean(model_crps) < 1.05 * np.mean(true_crps)


def test_registry_and_clear_errors(simulated, key):
    _, frame_a, _, _ = simulated
    assert FORECASTERS["market_model"] is CrossAssetForecaster
    assert CrossAssetForecaster.kinds == ("market",)
    with pytest.raises(ValueError, match="does not take option.*widht"):
        make_forecaster("market_model", widht=3)
    with pytest.raises(ValueError, match="loss_units"):
        CrossAssetForecaster(loss_units=("absolute",))
    with pytest.raises(ValueError, match="validation_fraction"):
        CrossAssetForecaster(validation_fraction=1.5)
    with pytest.raises(RuntimeError, match="before fit"):
        CrossAssetForecaster().forecast(frame_a.iloc[:100], HORIZON, 4, key=key)
    trajectory = validate(pd.DataFrame({"asset": "x", "timestamp": np.arange(50.0), "x0": np.sin(np.arange(50.0))}))
    with pytest.raises(ValueError, match="supports market"):
        CrossAssetForecaster(**SMALL).fit(trajectory)
    with pytest.raises(ValueError, match="no asset has"):
        CrossAssetForecaster(**SMALL).fit(frame_a.iloc[:20])
    close_only = validate(frame_a[["asset", "timestamp", "close"]])
    with pytest.raises(MissingColumnError, match="market_model .*needs open, high and low columns; this frame has close only"):
        CrossAssetForecaster(**SMALL).fit(close_only)


@pytest.mark.slow  # fits the network (~15 s alone, more on a loaded machine)
def test_errors_of_a_fitted_model(fitted, simulated, key):
    _, frame_a, _, _ = simulated
    with pytest.raises(ValueError, match="key"):
        fitted.forecast(frame_a.iloc[:100], HORIZON, 4)
    with pytest.raises(ValueError, match="horizon=5; asked for 6"):
        fitted.forecast(frame_a.iloc[:100], 6, 4, key=key)
    with pytest.raises(ValueError, match="needs at least 23"):
        fitted.forecast(frame_a.iloc[:10], HORIZON, 4, key=key)


def test_config_is_frozen_with_a_field_per_setting():
    config = MarketModelConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.horizon = 3  # type: ignore[misc]
    np.testing.assert_allclose(config.levels(), np.arange(1, 100) / 100)
