"""TokenForecaster: forecasts in original units from a trained run, classified by what it saw."""

import jax
import numpy as np
import pytest

from chaosfm._config import ConfigError
from chaosfm.data import load
from chaosfm.evaluate import Protocol, evaluate, fit_through
from chaosfm.forecasters import TokenForecaster
from chaosfm.jobs import train as train_job


def _config(data, tokenizer, model_kind="gpt", *, out, **model):
    body = {"kind": model_kind, "context_length": 24, "d_model": 32, "n_layers": 1, **model}
    if model_kind == "mamba":
        body.update(d_state=8, head_dim=16, chunk_size=8)
    return train_job.parse_train_run_file({
        "data": data,
        "tokenizer": tokenizer,
        "model": body,
        "train": {"steps": 4, "batch_size": 4, "warmup_steps": 1, "checkpoint_every": 4, "log_every": 1},
        "out": str(out),
    })


@pytest.fixture(scope="module")
def lorenz_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("lorenz") / "run"
    config = _config(
        {"names": "lorenz63", "options": {"length": 800}, "embargo": 5},
        {"kind": "bins", "options": {"vocab_size": 34, "kind": "quantile"}},
        "mamba",
        out=out,
        exo_clock=True,
    )
    train_job.run(config)
    return out


@pytest.fixture(scope="module")
def sp500_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sp500") / "run"
    config = _config(
        {"names": "sp500", "cutoff": "2003-12-31"},
        {"kind": "fsq", "options": {"levels": [3, 3], "window": 32, "dilations": [1, 2], "batch_size": 4},
         "steps": 3},
        out=out,
    )
    train_job.run(config)
    return out


def test_bins_forecast_shape_units_and_records(lorenz_run):
    forecaster = TokenForecaster(lorenz_run)
    frame = load("lorenz63", length=800)
    context = frame.iloc[600:700]
    forecast = forecaster.forecast(context, 7, 5, key=jax.random.key(0))
    assert forecast.samples.shape == (5, 7, 3) and forecast.columns == ["x0", "x1", "x2"]
    # Decoded values are bin centres times the context's scale: within the range of the data.
    reach = np.abs(context[["x0", "x1", "x2"]].to_numpy()).max(axis=0) * 4
    assert np.all(np.isfinite(forecast.samples)) and np.all(np.abs(forecast.samples) <= reach)
    cutoff = frame["timestamp"].iloc[int(800 * 0.8) - 1]
    assert forecaster.trained_through == {"lorenz63": cutoff}
    assert forecaster.upstream_trained_through() == [{"lorenz63": cutoff}]
    # Same key, same paths; no key, an error.
    again = forecaster.forecast(context, 7, 5, key=jax.random.key(0))
    np.testing.assert_array_equal(again.samples, forecast.samples)
    with pytest.raises(ValueError, match="key"):
        forecaster.forecast(context, 7, 5)
    assert forecaster.fit(frame.iloc[:100]).trained_through == {"lorenz63": cutoff}


def test_windows_are_classified_from_the_run(lorenz_run):
    frame = load("lorenz63", length=800)
    forecaster = TokenForecaster(lorenz_run)
    cutoff = frame["timestamp"].iloc[int(800 * 0.8) - 1]
    fit_through({"run": forecaster}, frame, frame["timestamp"].iloc[100])  # fit keeps the run's record
    protocol = Protocol(horizon=5, num_samples=4, context_length=60, min_context=60, step=100, embargo=5)
    results = evaluate({"run": forecaster}, frame, protocol, cutoff=cutoff)
    classes = set(results.scores["window_class"])
    assert "in_sample" in classes and "fresh" in classes


def test_candle_forecast_rebuilds_closes(sp500_run):
    forecaster = TokenForecaster(sp500_run, temperature=0.0)
    frame = load("sp500")
    context = frame.iloc[1000:1100]
    forecast = forecaster.forecast(context, 4, 3)
    assert forecast.samples.shape == (3, 4, 1) and forecast.columns == ["close"]
    last = context["close"].iloc[-1]
    # Daily moves of a few percent at most, anchored at the last close; greedy paths coincide.
    assert np.all(np.abs(np.log(forecast.samples / last)) < 0.5)
    np.testing.assert_allclose(forecast.samples[0], forecast.samples[1])


def test_not_a_run(tmp_path):
    with pytest.raises(ConfigError, match="codes.json"):
        TokenForecaster(tmp_path)
