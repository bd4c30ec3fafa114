"""FlowMambaForecaster: a hand-worked linear flow, the ridge readout, samples, fences and errors."""

import jax
import numpy as np
import pandas as pd
import pytest

from chaosfm.data import trained_through
from chaosfm.forecasters._flow import FlowMambaForecaster, _ridge

TINY = dict(d_model=8, n_layers=1, d_state=4, head_dim=4, mlp_width=8, mlp_layers=1, window=16, warmup=2,
            batch_size=4, steps=5, validation_windows=2, validation_context=50, ridge=(1e-12, 1e-6))


def _rotation_frame(length: int = 600, angle: float = 0.05) -> pd.DataFrame:
    """A harmonic oscillator sampled exactly: x_{t+1} = R(angle) x_t on the unit circle."""
    phase = angle * np.arange(length)
    return pd.DataFrame({"asset": "oscillator", "timestamp": 0.1 * np.arange(length),
                         "x0": np.cos(phase), "x1": np.sin(phase)})


@pytest.fixture(scope="module")
def fitted():
    frame = _rotation_frame()
    return FlowMambaForecaster(**TINY).fit(frame.iloc[:500]), frame


def test_a_linear_flow_is_forecast_almost_exactly_by_the_ridge_readout(fitted):
    # The increment of a rotation is linear in the state, and the state is one of the readout's
    # features: the closed-form readout finds it whatever the barely trained layers do.
    forecaster, frame = fitted
    forecast = forecaster.forecast(frame.iloc[300:500], 100, 1)
    truth = frame[["x0", "x1"]].to_numpy()[500:600]
    assert np.max(np.abs(forecast.point_forecast() - truth)) < 1e-2
    assert forecaster.chosen_["ridge"] in TINY["ridge"]
    # Held out: the last 100 of 500 rows; validation forecasts of 50 steps stay valid throughout.
    assert forecaster.chosen_["validation_score"] == pytest.approx(50.0)
    assert forecaster.chosen_["validation_unit"] == "steps"


def test_ridge_matches_numpy_least_squares():
    rng = np.random.default_rng(0)
    design = [rng.standard_normal((50, 4)), rng.standard_normal((30, 4))]
    targets = [rng.standard_normal((50, 2)), rng.standard_normal((30, 2))]
    x, y = np.concatenate(design), np.concatenate(targets)
    np.testing.assert_allclose(_ridge(design, targets, 0.0), np.linalg.lstsq(x, y, rcond=None)[0], atol=1e-10)
    penalty = 0.3
    closed = np.linalg.solve(x.T @ x + penalty * len(x) * np.eye(4), x.T @ y)
    np.testing.assert_allclose(_ridge(design, targets, penalty), closed, atol=1e-12)


def test_samples_spread_around_the_unperturbed_point(fitted):
    forecaster, frame = fitted
    forecast = forecaster.forecast(frame.iloc[300:500], 20, 5, key=jax.random.key(3))
    assert forecast.samples.shape == (5, 20, 2)
    np.testing.assert_allclose(forecast.samples[0], forecast.point_forecast())
    assert not np.array_equal(forecast.samples[1], forecast.samples[0])  # noise of the tiny residual
    with pytest.raises(ValueError, match="pass key"):
        forecaster.forecast(frame.iloc[300:500], 20, 5)
    assert forecaster.trained_through == trained_through(frame.iloc[:500])


def test_context_normalisation_reads_scale_from_the_context():
    # With normalisation="context" a forecast is equivariant to the scale and offset of the
    # context, the way a model meant for unseen systems must be.
    frame = _rotation_frame()
    forecaster = FlowMambaForecaster(**TINY, normalisation="context").fit(frame.iloc[:500])
    moved = frame.assign(x0=10 * frame["x0"] + 3, x1=10 * frame["x1"] - 1)
    base = forecaster.forecast(frame.iloc[:500], 50, 1).point_forecast()
    forecast = forecaster.forecast(moved.iloc[:500], 50, 1).point_forecast()
    np.testing.assert_allclose(forecast, 10 * base + np.array([3.0, -1.0]), atol=1e-4)
    truth = moved[["x0", "x1"]].to_numpy()[500:550]
    assert np.max(np.abs(forecast - truth)) < 0.1


def test_context_readout_forecasts_a_rotation_it_never_saw():
    # Zero-shot in miniature: fitted on one rotation, the readout refitted on each context's own
    # increments (in-context least squares) forecasts a rotation at another speed.
    forecaster = FlowMambaForecaster(**TINY, normalisation="context", readout="context").fit(_rotation_frame()[:500])
    unseen = _rotation_frame(angle=0.11)
    forecast = forecaster.forecast(unseen.iloc[200:500], 100, 1).point_forecast()
    truth = unseen[["x0", "x1"]].to_numpy()[500:600]
    assert np.max(np.abs(forecast - truth)) < 1e-2
    fixed = FlowMambaForecaster(**TINY, normalisation="context").fit(_rotation_frame()[:500])
    assert np.max(np.abs(fixed.forecast(unseen.iloc[200:500], 100, 1).point_forecast() - truth)) > 0.1


def test_errors_name_the_option_the_rule_and_the_rows():
    with pytest.raises(ValueError, match="flow_mamba options: windw"):
        FlowMambaForecaster(windw=3)
    with pytest.raises(ValueError, match="steps"):
        FlowMambaForecaster(steps=0)
    with pytest.raises(ValueError, match="give ridge penalties"):
        FlowMambaForecaster(readout="context", ridge=())
    with pytest.raises(RuntimeError, match="before fit"):
        FlowMambaForecaster().forecast(_rotation_frame(), 3, 1)
    with pytest.raises(ValueError, match="shorter than window"):
        FlowMambaForecaster(**{**TINY, "window": 64}).fit(_rotation_frame(40))
    market = pd.DataFrame({"asset": "a", "timestamp": pd.date_range("2020-01-01", periods=50),
                           "open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0, "volume": 1.0})
    with pytest.raises(ValueError, match="trajectory"):
        FlowMambaForecaster(**TINY).fit(market)
