"""Heads on a frozen JEPA: the registered window scores, the forecaster and the ridge probes."""

import json

import jax
import numpy as np
import pandas as pd
import pytest

from chaosfm.data import load
from chaosfm.evaluate import Forecast, JEPAForecaster, Window, crps, long_short_return, probe_study, relative_crps
from chaosfm.train import PretrainConfig, run_pretrain

TINY_MODEL = dict(context_length=16, d_model=16, n_layers=1, d_state=8, head_dim=8, d_embed=8, d_pred=8,
                  min_future=4, max_future=8, min_span=2, max_span=4, cfm_horizon=3, cfm_steps=2)
TINY_TRAIN = dict(steps=3, batch_size=4, warmup_steps=0, checkpoint_every=3, log_every=1)


def test_long_short_return_and_relative_crps():
    history = np.array([[100.0], [102.0]])
    observed = np.array([[103.0], [105.0]])
    up = Forecast(np.full((5, 2, 1), 110.0))
    down = Forecast(np.full((5, 2, 1), 90.0))
    assert long_short_return(Window(up, observed, history)) == pytest.approx(np.log(105 / 102))
    assert long_short_return(Window(down, observed, history)) == pytest.approx(-np.log(105 / 102))
    samples = np.random.default_rng(0).normal(104, 2, (50, 2, 1))
    window = Window(Forecast(samples), observed, history)
    assert relative_crps(window) == pytest.approx(100 * np.mean(crps(samples, observed)) / 102.0)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    frame = load("sp500")
    frame = frame[(frame["timestamp"] >= "2005-01-01") & (frame["timestamp"] <= "2006-12-31")].reset_index(drop=True)
    root = tmp_path_factory.mktemp("jepa")
    config = PretrainConfig.model_validate(
        {"data": {"names": ["sp500"], "cutoff": "2006-06-30"}, "model": {**TINY_MODEL, "cfm_weight": 1.0},
         "train": TINY_TRAIN}
    )
    result = run_pretrain(config, root / "run", frame=frame)
    return root / "run", frame, result


def test_pretrain_run_records_what_it_saw(small_run):
    run, frame, result = small_run
    meta = json.loads((run / "meta.json").read_text())
    assert meta["trained_through"] == {"sp500": "2006-06-30T00:00:00"}
    heldout = result.metrics["heldout"]
    assert heldout["windows"] > 50 and heldout["std_mean"] > 0
    assert result.metrics["variance_target_std"] == pytest.approx(0.5 / np.sqrt(8))


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


def test_probe_classes_come_from_trained_through(small_run):
    run, frame, _ = small_run
    out = probe_study(run, frame, "2006-03-31", horizon=3, step=3, embargo=2, n_bootstrap=100)
    for target in ("next_return", "realized_vol"):
        classes = out[target]
        # Probe fits to March, encoder saw to June: April-June is within-pretrain, later is fresh.
        assert classes["in_sample"]["n_windows"] > 0
        assert 15 < classes["within_pretrain"]["n_windows"] < 30
        assert classes["fresh"]["n_windows"] > 30
        gap = classes["leakage_gap"]
        assert gap["ci_low"] <= gap["value"] <= gap["ci_high"]
