"""Tests for chaosfm.forecasters._parroting: context parroting (Zhang & Gilpin 2025)."""

import jax
import numpy as np
import pandas as pd
import pytest

from chaosfm.data import validate
from chaosfm.forecasters import FORECASTERS, ContextParroting, LastValue
from chaosfm.forecasters._parroting import _distinct_best

from ._helpers import lorenz63


def trajectory_frame(values: np.ndarray, asset: str = "traj") -> pd.DataFrame:
    values = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    frame = pd.DataFrame({f"x{i}": values[:, i] for i in range(values.shape[1])})
    frame.insert(0, "timestamp", np.arange(len(values)))
    frame.insert(0, "asset", asset)
    return validate(frame)


def market_frame(close: np.ndarray) -> pd.DataFrame:
    return validate(pd.DataFrame({
        "asset": "A",
        "timestamp": pd.date_range("2001-01-01", periods=len(close), freq="D"),
        "open": close, "high": close, "low": close, "close": close, "volume": 1.0,
    }))


def steps_until_error(prediction: np.ndarray, truth: np.ndarray, scale: np.ndarray) -> int:
    """Steps before the RMS error over channels, in units of ``scale``, first exceeds 0.4."""
    error = np.sqrt(np.mean(((prediction - truth) / scale) ** 2, axis=1))
    over = np.flatnonzero(error > 0.4)
    return int(over[0]) if over.size else len(error)


def brute_force_best_start(series: np.ndarray, motif_length: int, horizon: int) -> int:
    """The obviously correct reference: loop over every admissible window."""
    scaled = series / series.std(axis=0)
    motif = scaled[-motif_length:]
    best, best_distance = None, np.inf
    for start in range(len(series)):
        end = start + motif_length  # one past the window
        if end + max(horizon, motif_length) > len(series):
            break
        distance = np.sum((scaled[start:end] - motif) ** 2)
        if distance < best_distance:
            best, best_distance = start, distance
    return best


def test_registered_and_deterministic_without_a_key():
    assert FORECASTERS["context_parroting"] is ContextParroting
    assert set(ContextParroting.kinds) == {"market", "trajectory"}
    t = np.arange(500) * 0.05
    frame = trajectory_frame(np.column_stack([np.sin(t) + 0.1 * np.sin(7.3 * t), np.cos(1.7 * t)]))
    model = ContextParroting(motif_length=15).fit(frame)
    assert model.trained_through == {"traj": 499}
    first = model.forecast(frame, 30, 8)
    again = model.forecast(frame, 30, 8, key=jax.random.key(3))
    assert first.samples.shape == (8, 30, 2) and first.columns == ["x0", "x1"]
    np.testing.assert_array_equal(first.samples, again.samples)


def test_first_sample_copies_the_brute_force_best_match():
    rng = np.random.default_rng(0)
    t = np.arange(700) * 0.07
    values = np.column_stack([np.sin(t) * (1 + 0.3 * np.sin(0.31 * t)), 50.0 * np.cos(1.9 * t)])
    values += 0.05 * rng.standard_normal(values.shape) * [1.0, 50.0]
    frame = trajectory_frame(values)
    model = ContextParroting(motif_length=12).fit(frame)
    for horizon in (1, 5, 40):
        best = brute_force_best_start(values, 12, horizon)
        forecast = model.forecast(frame, horizon, 6)
        np.testing.assert_array_equal(forecast.samples[0], values[best + 12 : best + 12 + horizon])
        # Every path is a verbatim continuation of some earlier window of the context.
        for path in forecast.samples:
            starts = [s for s in range(len(values) - horizon) if np.array_equal(values[s : s + horizon], path)]
            assert starts


def test_paths_come_from_distinct_matches_and_cycle_when_few():
    rng = np.random.default_rng(1)
    values = rng.standard_normal((60, 1))
    frame = trajectory_frame(values)
    model = ContextParroting(motif_length=10, min_separation=1).fit(frame)
    # Admissible starts: end + max(H, D) <= 60, so starts 0..30 for H = 20: 31 matches.
    forecast = model.forecast(frame, 20, 40)
    distinct = {path.tobytes() for path in forecast.samples[:31]}
    assert len(distinct) == 31
    np.testing.assert_array_equal(forecast.samples[31:], forecast.samples[:9])


def test_distinct_best_keeps_matches_apart():
    distances = np.array([5.0, 0.0, 0.1, 0.2, 9.0, 0.3, 8.0, 7.0, 0.05])
    assert _distinct_best(distances, 3, 1).tolist() == [1, 8, 2]
    assert _distinct_best(distances, 3, 3).tolist() == [1, 8, 5]
    assert _distinct_best(distances, 10, 3).tolist() == [1, 8, 5]  # fewer than asked: all left


def test_horizon_beyond_the_context_chains_the_copies():
    period = 25
    wave = np.sin(2 * np.pi * np.arange(300) / period) + 0.5 * np.cos(6 * np.pi * np.arange(300) / period)
    frame = trajectory_frame(wave[:60])
    forecast = ContextParroting(motif_length=20).fit(frame).forecast(frame, 150, 3)
    np.testing.assert_allclose(forecast.samples[0, :, 0], wave[60:210], atol=1e-12)


def test_market_parrots_log_returns_into_prices():
    returns = np.tile([0.01, -0.02, 0.015, 0.003, -0.008, 0.02, -0.01], 30)
    prices = 80.0 * np.exp(np.cumsum(returns))
    frame = market_frame(prices[:150])
    model = ContextParroting(motif_length=14).fit(frame)
    forecast = model.forecast(frame, 20, 4)
    assert forecast.columns == ["close"] and forecast.asset == "A"
    assert np.all(forecast.samples > 0)
    # A level-free motif: the returns repeat while the price trends, and the copy continues it.
    np.testing.assert_allclose(forecast.samples[0, :, 0], prices[150:170], rtol=1e-10)


def test_short_context_says_how_long():
    frame = trajectory_frame(np.arange(100.0))
    model = ContextParroting(motif_length=20).fit(frame)
    with pytest.raises(ValueError, match="at least 40"):
        model.forecast(frame.iloc[:39], 5, 2)
    market = ContextParroting(motif_length=20).fit(market_frame(np.linspace(10, 20, 100)))
    with pytest.raises(ValueError, match="at least 41"):
        market.forecast(market_frame(np.linspace(10, 20, 40)), 5, 2)
    with pytest.raises(ValueError, match="motif_length"):
        ContextParroting(motif_length=0)


def test_parroting_tracks_lorenz_far_longer_than_persistence():
    states = lorenz63(6000)
    frame = trajectory_frame(states, "lorenz")
    parroting = ContextParroting(motif_length=20).fit(frame.iloc[:2000])
    persistence = LastValue().fit(frame.iloc[:2000])
    horizon, parrot_steps, persistence_steps = 300, [], []
    for origin in range(2000, 5701, 400):  # 10 origins, each forecast only from its own past
        context = frame.iloc[:origin]
        scale = states[:origin].std(axis=0)
        truth = states[origin : origin + horizon]
        parrot_path = parroting.forecast(context, horizon, 4).samples[0]
        persistence_path = persistence.forecast(context, horizon, 1).samples[0]
        parrot_steps.append(steps_until_error(parrot_path, truth, scale))
        persistence_steps.append(steps_until_error(persistence_path, truth, scale))
    # dt = 0.02 and a largest Lyapunov exponent of ~0.9: 50 steps is about one Lyapunov time.
    assert np.mean(parrot_steps) > 50
    assert np.mean(parrot_steps) > 10 * np.mean(persistence_steps)
