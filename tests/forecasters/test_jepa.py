"""JEPAForecaster and probe_windows: heads on a frozen pretrained JEPA."""

import json

import jax
import numpy as np
import pandas as pd
import pytest

from chaosfm.forecasters import JEPAForecaster, probe_windows
from chaosfm.train import load_pretrained



@pytest.fixture(scope="module")
def small_run(tiny_jepa_run):
    return tiny_jepa_run


def test_pretrain_run_records_what_it_saw(small_run):
    run, frame, metrics = small_run
    meta = json.loads((run / "meta.json").read_text())
    assert meta["trained_through"] == {"sp500": "2006-06-30T00:00:00"}
    heldout = metrics["heldout"]
    assert heldout["windows"] > 50 and heldout["std_mean"] > 0
    assert metrics["variance_target_std"] == pytest.approx(0.5 / np.sqrt(8))
    assert json.loads((run / "metrics.json").read_text())["heldout"]["windows"] == heldout["windows"]


def test_forecaster_samples_closes_and_reports_upstream(small_run):
    run, frame, _ = small_run
    forecaster = JEPAForecaster(run, horizon=3)
    train = frame[frame["timestamp"] <= "2006-03-31"]
    forecaster.fit(train)
    assert forecaster.trained_through == {"sp500": pd.Timestamp("2006-03-31")}
    assert forecaster.upstream_trained_through() == [{"sp500": pd.Timestamp("2006-06-30")}]
    context = frame.iloc[200:200 + forecaster.min_context()]
    out = forecaster.forecast(context, 3, 20, key=jax.random.key(0))
    assert out.samples.shape == (20, 3, 1) and np.isfinite(out.samples).all()
    # Paths start from the last close: one-step moves are a few percent at most.
    assert np.all(np.abs(out.samples[:, 0, 0] / context["close"].iloc[-1] - 1) < 0.2)
    assert out.samples[:, 0, 0].std() > 0
    with pytest.raises(ValueError, match="horizon"):
        forecaster.forecast(context, 4, 5, key=jax.random.key(0))
    with pytest.raises(ValueError, match="stochastic"):
        forecaster.forecast(context, 3, 5)


def test_probe_windows_targets_are_the_closes_log_returns(small_run):
    run, frame, _ = small_run
    model, inputs, _ = load_pretrained(run)
    horizon, step = 3, 4
    windows = probe_windows(model, inputs, frame, horizon=horizon, step=step)
    assert len(windows) > 50 and set(windows["asset"]) == {"sp500"}
    assert np.all(np.diff(windows["end"]) == step)
    assert np.stack(windows["embedding"].to_numpy()).shape == (len(windows), model.config.d_embed)
    # Independent reference: the log returns of the closes over the window's target rows.
    close = frame.set_index("timestamp")["close"]
    position = {stamp: i for i, stamp in enumerate(close.index)}
    log_close = np.log(close.to_numpy())
    for row in windows.itertuples(index=False):
        first, last = position[row.first_target], position[row.last_target]
        assert last - first == horizon - 1
        returns = np.diff(log_close[first - 1:last + 1])
        assert row.next_return == pytest.approx(returns.sum(), rel=1e-4, abs=1e-7)
        assert row.realized_vol == pytest.approx(np.sqrt(np.mean(returns**2)), rel=1e-4, abs=1e-7)
    # A frame too short for one encoder window and its horizon gives no window.
    assert probe_windows(model, inputs, frame.iloc[:30], horizon=horizon, step=step).empty
