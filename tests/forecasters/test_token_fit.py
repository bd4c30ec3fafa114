"""token_mamba / token_gpt: bins and a code model trained in fit, decoded like TokenForecaster."""

import jax
import numpy as np
import pandas as pd
import pytest

from chaosfm.data import trained_through, validate
from chaosfm.forecasters import (
    FORECASTERS,
    LastValue,
    TokenGPTForecaster,
    TokenMambaForecaster,
    make_forecaster,
)
from chaosfm.tokenizers import mean_abs_scale

PERIOD = 40
TINY_MAMBA = dict(vocab_size=18, context_rows=8, d_model=16, n_layers=1, batch_size=8, learning_rate=1e-2,
                  warmup_steps=0, model_options={"d_state": 8, "head_dim": 8, "chunk_size": 8})


def orbit_frame(rows: int, asset: str = "orbit") -> pd.DataFrame:
    """A periodic orbit, ``PERIOD`` rows a turn, offset from zero so its mean-abs scale is steady."""
    phase = 2 * np.pi * np.arange(rows) / PERIOD
    frame = pd.DataFrame({"asset": asset, "timestamp": 0.1 * np.arange(rows),
                          "x0": 3.0 + np.cos(phase), "x1": 3.0 + np.sin(phase)})
    return validate(frame)


@pytest.fixture(scope="module")
def fitted():
    frame = orbit_frame(640)
    return TokenMambaForecaster(**TINY_MAMBA, steps=150, point="greedy").fit(frame.iloc[:600]), frame


def test_a_briefly_trained_model_follows_a_periodic_orbit_better_than_the_last_value(fitted):
    forecaster, frame = fitted
    context, truth = frame.iloc[440:600], frame[["x0", "x1"]].to_numpy()[600:620]
    point = forecaster.forecast(context, 20, 1).point_forecast()
    last = LastValue().fit(frame.iloc[:600]).forecast(context, 20, 1).point_forecast()
    token_error, last_error = np.abs(point - truth).mean(), np.abs(last - truth).mean()
    # Half a turn: the last value is off by ~0.9 on average; 16 bins a channel are ~0.15 wide.
    assert token_error < 0.25 * last_error, (token_error, last_error)


def test_samples_are_bin_values_at_the_contexts_scale_and_greedy_path_zero_is_the_point(fitted):
    forecaster, frame = fitted
    context = frame.iloc[500:600]
    forecast = forecaster.forecast(context, 12, 6, key=jax.random.key(1))
    assert forecast.samples.shape == (6, 12, 2) and forecast.columns == ["x0", "x1"]
    assert forecast.asset == "orbit"
    # Every value decodes a bin: a bin centre times the context's mean-abs scale, per channel.
    scale = mean_abs_scale(context[["x0", "x1"]].to_numpy())
    bins = np.arange(2, 18)
    centres = forecaster.tokenizer.decode(np.stack([bins, bins], axis=1), scale=scale)  # (bins, C)
    for channel in range(2):
        values = forecast.samples[..., channel].ravel()
        assert np.all(np.isclose(values[:, None], centres[None, :, channel]).any(axis=1))
    # Path 0 is the greedy path, the point forecast; the others are sampled with the key.
    greedy = forecaster.forecast(context, 12, 1)
    np.testing.assert_array_equal(forecast.samples[0], greedy.samples[0])
    np.testing.assert_array_equal(forecast.point_forecast(), greedy.samples[0])
    again = forecaster.forecast(context, 12, 6, key=jax.random.key(1))
    np.testing.assert_array_equal(again.samples, forecast.samples)
    with pytest.raises(ValueError, match="key"):
        forecaster.forecast(context, 12, 6)


def test_temperature_zero_draws_one_greedy_path_and_median_points_are_sample_medians(fitted):
    forecaster, frame = fitted
    context = frame.iloc[500:600]
    greedy = forecaster.forecast(context, 10, 1).samples[0]
    forecaster.settings = forecaster.settings.model_copy(update={"temperature": 0.0, "point": "median"})
    try:
        forecast = forecaster.forecast(context, 10, 4)  # deterministic: no key needed
        np.testing.assert_array_equal(forecast.samples, np.broadcast_to(greedy, (4, 10, 2)))
        forecaster.settings = forecaster.settings.model_copy(update={"temperature": 1.0})
        sampled = forecaster.forecast(context, 10, 5, key=jax.random.key(2))
        assert sampled.point is None
        np.testing.assert_array_equal(sampled.point_forecast(), np.median(sampled.samples, axis=0))
    finally:
        forecaster.settings = forecaster.settings.model_copy(update={"temperature": 1.0, "point": "greedy"})


def test_fit_reads_only_the_frame_it_is_given(fitted):
    forecaster, frame = fitted
    seen = frame.iloc[:600]
    assert forecaster.trained_through == trained_through(seen)
    assert forecaster.tokenizer.trained_through == trained_through(seen)
    assert forecaster.upstream_trained_through() == []
    # The bins are the 1/16 .. 15/16 quantiles of the given rows, scaled as their code stream is
    # (by the mean-abs of all of them): probe values fall in the bins those quantiles make.
    values = seen[["x0", "x1"]].to_numpy()
    scale = mean_abs_scale(values)
    edges = np.quantile(values / scale, np.arange(1, 16) / 16, axis=0)  # (15, C)
    probes = np.random.default_rng(0).uniform(values.min(axis=0) - 0.5, values.max(axis=0) + 0.5, (500, 2))
    codes, _ = forecaster.tokenizer.encode_values(probes, scale=scale)
    for channel in range(2):
        expected = np.searchsorted(edges[:, channel], probes[:, channel] / scale[channel], side="right") + 2
        np.testing.assert_array_equal(codes[:, channel], expected)


def test_same_settings_and_seed_give_the_same_forecast():
    frame = orbit_frame(200)
    options = dict(TINY_MAMBA, steps=3, point="greedy")
    first = TokenMambaForecaster(**options).fit(frame).forecast(frame.iloc[100:], 5, 1).samples
    second = TokenMambaForecaster(**options).fit(frame).forecast(frame.iloc[100:], 5, 1).samples
    np.testing.assert_array_equal(first, second)


def test_token_gpt_is_registered_and_forecasts_every_channel():
    assert FORECASTERS["token_gpt"] is TokenGPTForecaster and FORECASTERS["token_mamba"] is TokenMambaForecaster
    frame = orbit_frame(200)
    forecaster = make_forecaster("token_gpt", vocab_size=10, context_rows=6, d_model=16, n_layers=1, steps=3,
                                 batch_size=4, warmup_steps=0, model_options={"n_heads": 2, "n_kv_heads": 1})
    forecast = forecaster.fit(frame).forecast(frame.iloc[150:], 7, 3, key=jax.random.key(0))
    assert forecast.samples.shape == (3, 7, 2) and np.all(np.isfinite(forecast.samples))
    assert forecaster.model.kind == "gpt" and forecaster.model.config.context_length == 12


@pytest.mark.parametrize(
    "options, named",
    [
        ({"vocab": 64}, "vocab"),
        ({"temperature": -1.0}, "temperature"),
        ({"point": "mean"}, "point"),
        ({"model_options": {"d_stat": 8}}, "d_stat"),
        ({"model_options": {"head_dim": 7}}, "head_dim"),
    ],
)
def test_a_bad_option_is_a_value_error_naming_it(options, named):
    with pytest.raises(ValueError, match=named):
        make_forecaster("token_mamba", **options)


def test_a_series_shorter_than_the_context_and_a_forecast_before_fit_are_refused():
    forecaster = TokenMambaForecaster(**{**TINY_MAMBA, "context_rows": 64})
    with pytest.raises(RuntimeError, match="before fit"):
        forecaster.forecast(orbit_frame(10), 3, 1)
    with pytest.raises(ValueError, match="context_rows=64"):
        forecaster.fit(orbit_frame(50))
