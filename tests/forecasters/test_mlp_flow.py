"""Tests for chaosfm.forecasters._mlp_flow: the MLP of the one-step flow map."""

import jax
import numpy as np
import pandas as pd
import pytest

from chaosfm.data import validate
from chaosfm.evaluate import valid_prediction_time
from chaosfm.forecasters import FORECASTERS, MLPFlow, make_forecaster
from chaosfm.forecasters._mlp_flow import one_step_pairs

from ._helpers import lorenz63

LORENZ_LYAPUNOV = 0.9056  # Sprott (2003), Chaos and Time-Series Analysis, Table A.1
DT = 0.02


def trajectory_frame(values, asset="traj", lyapunov=None, dt=None) -> pd.DataFrame:
    values = np.asarray(values, dtype=np.float64)
    frame = pd.DataFrame({f"x{i}": values[:, i] for i in range(values.shape[1])})
    frame.insert(0, "timestamp", np.arange(len(values)) * (dt or 1.0))
    frame.insert(0, "asset", asset)
    frame = validate(frame)
    if lyapunov is not None:
        frame.attrs.update(lyapunov_exponent=lyapunov, dt=dt)
    return frame


def small(**options) -> MLPFlow:
    return MLPFlow(**{**dict(width=32, depth=2, steps=1500, learning_rate=3e-3), **options})


def test_fits_a_linear_flow_map():
    # x_{t+1} = A x_t, a decaying rotation, from several starts (one asset each) to cover the plane.
    angle = 0.1
    a = 0.99 * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    parts = []
    for index, start in enumerate([(1.0, 0.0), (0.0, -0.7), (-0.4, 0.4)]):
        orbit = [np.array(start)]
        for _ in range(299):
            orbit.append(a @ orbit[-1])
        parts.append(trajectory_frame(np.array(orbit), asset=f"orbit{index}"))
    model = small().fit(pd.concat(parts, ignore_index=True))
    assert model.search_scores_ == [] and model.chosen_ == {"learning_rate": 3e-3}
    # One step at points inside the training range, in original units.
    points = np.random.default_rng(0).uniform(-0.6, 0.6, size=(50, 2))
    normalised = model.scaling.normalise(points)
    predicted = model.scaling.restore(normalised + model._increments(normalised))
    step = np.linalg.norm(points @ a.T - points, axis=1)
    error = np.linalg.norm(predicted - points @ a.T, axis=1)
    assert np.median(error / step) < 0.05  # increments within 5 % of the true ones
    # Closed loop from a training orbit follows A^h x for a quarter turn.
    context = parts[0].iloc[:100]
    truth = [context[["x0", "x1"]].to_numpy()[-1]]
    for _ in range(15):
        truth.append(a @ truth[-1])
    forecast = model.forecast(context, 15, 1)
    np.testing.assert_allclose(forecast.point, np.array(truth[1:]), atol=0.02)


def test_pairs_never_straddle_assets():
    first, second = np.arange(6.0).reshape(3, 2), 10 + np.arange(4.0).reshape(2, 2)
    inputs, increments = one_step_pairs([first, second])
    np.testing.assert_array_equal(inputs, [[0, 1], [2, 3], [10, 11]])
    np.testing.assert_array_equal(increments, [[2, 2], [2, 2], [2, 2]])


@pytest.fixture(scope="module")
def lorenz():
    values = lorenz63(3000)
    return values, trajectory_frame(values[:2400], lyapunov=LORENZ_LYAPUNOV, dt=DT)


def test_search_samples_and_determinism(lorenz):
    values, train = lorenz
    model = small(learning_rate=None, steps=600, search_steps=300, validation_windows=2).fit(train)
    assert [s["learning_rate"] for s, _ in model.search_scores_] == list(MLPFlow.SEARCH["learning_rate"])
    assert model.chosen_ == max(model.search_scores_, key=lambda pair: pair[1])[0]
    assert model.search_unit_ == "Lyapunov times"
    context = trajectory_frame(values[2300:2400])
    forecast = model.forecast(context, 100, 4, key=jax.random.key(1))
    assert forecast.samples.shape == (4, 100, 3)
    np.testing.assert_array_equal(forecast.samples[0], forecast.point)
    assert np.all(forecast.samples[1:, 0] != forecast.samples[0, 0])
    again = small(learning_rate=None, steps=600, search_steps=300, validation_windows=2).fit(train)
    np.testing.assert_array_equal(
        again.forecast(context, 100, 4, key=jax.random.key(1)).samples, forecast.samples
    )
    other = small(learning_rate=None, steps=600, search_steps=300, validation_windows=2, seed=1).fit(train)
    assert not np.array_equal(other.forecast(context, 100, 1).point, forecast.point)
    with pytest.raises(ValueError, match="key"):
        model.forecast(context, 10, 2)


def test_lorenz63_short_training_beats_persistence(lorenz):
    # 20,000 steps (~30 s) held a median of 5.2 Lyapunov times on fresh trajectories; 3,000
    # steps of a 64-wide MLP on 2,400 rows held a mean of 3.7 over these 3 windows (seeds 0
    # and 1), persistence 0.05. The bound 1.5 leaves room for a short run's seed-to-seed spread.
    values, train = lorenz
    model = small(width=64, depth=3, steps=3000).fit(train)
    scale = values[:2400].std(axis=0)
    vpts = [
        valid_prediction_time(
            model.forecast(trajectory_frame(values[origin - 10 : origin]), 400, 1).point,
            values[origin : origin + 400], LORENZ_LYAPUNOV, dt=DT, scale=scale,
        )
        for origin in range(2420, 2600, 60)
    ]
    assert np.mean(vpts) >= 1.5


def test_registry_and_errors(lorenz):
    values, train = lorenz
    assert FORECASTERS["mlp_flow"] is MLPFlow and make_forecaster("mlp_flow", steps=10).steps == 10
    for bad, match in [
        (dict(steps=0), "steps must be positive"), (dict(width=0), "width"),
        (dict(learning_rate=0.0), "learning_rate must lie in"), (dict(batch_size=2.0), "batch_size"),
        (dict(validation_windows=0), "validation_windows"),
    ]:
        with pytest.raises(ValueError, match=match):
            MLPFlow(**bad)
    with pytest.raises(RuntimeError, match="before fit"):
        MLPFlow().forecast(trajectory_frame(values[:5]), 5, 1)
    model = small(steps=5).fit(train)
    with pytest.raises(ValueError, match="needs at least 1"):
        model.forecast(trajectory_frame(values[:5]).iloc[:0], 5, 1)
