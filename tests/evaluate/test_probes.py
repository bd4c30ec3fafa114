"""Heads on a frozen JEPA, scored: the registered window scores and the ridge probes per class."""

import numpy as np
import pandas as pd
import pytest

from chaosfm.data import DataError
from chaosfm.evaluate import Window, crps, long_short_return, probe_scores, relative_crps
from chaosfm.forecasters import Forecast, probe_windows
from chaosfm.train import load_pretrained



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
def small_run(tiny_jepa_run):
    return tiny_jepa_run[:2]


def test_probe_classes_come_from_trained_through(small_run):
    run, frame = small_run
    model, inputs, meta = load_pretrained(run)
    windows = probe_windows(model, inputs, frame, horizon=3, step=3)
    upstream = [meta["trained_through"] or {}, meta["upstream_trained_through"] or {}]
    out = probe_scores(windows, frame, "2006-03-31", upstream, embargo=2, n_bootstrap=100)
    for target in ("next_return", "realized_vol"):
        classes = out[target]
        # Probe fits to March, encoder saw to June: April-June is within-pretrain, later is fresh.
        assert classes["in_sample"]["n_windows"] > 0
        assert 15 < classes["within_pretrain"]["n_windows"] < 30
        assert classes["fresh"]["n_windows"] > 30
        gap = classes["leakage_gap"]
        assert gap["ci_low"] <= gap["value"] <= gap["ci_high"]


# Synthetic windows: one asset, 200 daily rows, horizon 1 (window e's only target is row e + 1).
STAMPS = pd.date_range("2001-01-01", periods=200, freq="D")
ROWS = pd.DataFrame({"asset": "a", "timestamp": STAMPS})


def synthetic_windows(seed=0):
    rng = np.random.default_rng(seed)
    ends = np.arange(199)
    next_return = 0.01 * rng.standard_normal(ends.size)
    realized_vol = np.abs(next_return)
    embedding = np.stack([next_return, realized_vol], axis=1) + 0.005 * rng.standard_normal((ends.size, 2))
    return pd.DataFrame({
        "asset": "a", "end": ends, "first_target": STAMPS[ends + 1], "last_target": STAMPS[ends + 1],
        "embedding": list(embedding), "next_return": next_return, "realized_vol": realized_vol,
    })


def ridge_predictions(x, y, fit, alpha):
    """Ridge with an unpenalised intercept, in closed form (what scikit-learn's Ridge fits)."""
    x_mean, y_mean = x[fit].mean(axis=0), y[fit].mean()
    xc, yc = x[fit] - x_mean, y[fit] - y_mean
    coef = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ yc)
    return (x - x_mean) @ coef + y_mean


def r2(y, pred):
    return 1 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2)


def test_probe_scores_by_hand():
    windows = synthetic_windows()
    # The probe fits through row 99, the encoder saw through row 149; 5 rows of embargo after it.
    upstream = [{"a": STAMPS[149]}, None]
    out = probe_scores(windows, ROWS, STAMPS[99], upstream, embargo=5, alpha=1e-4, n_bootstrap=200)
    first = windows["end"].to_numpy() + 1  # row of each window's first target
    classes = {
        "in_sample": first <= 99,
        "within_pretrain": (first > 99) & (first <= 149),
        "fresh": first >= 155,  # rows 150..154 are embargoed
    }
    assert [int(m.sum()) for m in classes.values()] == [99, 50, 45]
    x = np.stack(windows["embedding"].to_numpy())
    for target in ("next_return", "realized_vol"):
        y = windows[target].to_numpy()
        pred = ridge_predictions(x, y, classes["in_sample"], 1e-4)
        entry = out[target]
        for name, rows in classes.items():
            assert entry[name]["n_windows"] == rows.sum()
            assert entry[name]["r2"] == pytest.approx(r2(y[rows], pred[rows]), abs=1e-6)
        gap = entry["leakage_gap"]
        expected = r2(y[classes["fresh"]], pred[classes["fresh"]]) - r2(y[classes["within_pretrain"]], pred[classes["within_pretrain"]])
        assert gap["value"] == pytest.approx(expected, abs=1e-6)
        assert gap["ci_low"] <= gap["value"] <= gap["ci_high"]
    assert out["next_return"]["in_sample"]["r2"] > 0.5  # the embedding carries the target
    # A per-asset cutoff is the same cutoff; the same seed gives the same intervals.
    assert probe_scores(windows, ROWS, {"a": STAMPS[99]}, upstream, embargo=5, alpha=1e-4, n_bootstrap=200) == out


def test_gap_needs_three_windows_a_class_and_ignores_degenerate_resamples():
    windows = synthetic_windows()
    # Two within-pretrain windows (first targets at rows 100, 101): no gap, never a guess.
    out = probe_scores(windows, ROWS, STAMPS[99], [{"a": STAMPS[101]}], embargo=5, n_bootstrap=200)
    assert out["next_return"]["within_pretrain"]["n_windows"] == 2
    assert out["next_return"]["leakage_gap"] == {"value": None, "ci_low": None, "ci_high": None}
    # Three: some resamples draw one window three times (R² undefined); the interval skips them.
    out = probe_scores(windows, ROWS, STAMPS[99], [{"a": STAMPS[102]}], embargo=5, n_bootstrap=200)
    for target in ("next_return", "realized_vol"):
        assert out[target]["within_pretrain"]["n_windows"] == 3
        gap = out[target]["leakage_gap"]
        assert np.isfinite([gap["value"], gap["ci_low"], gap["ci_high"]]).all()
        assert gap["ci_low"] <= gap["ci_high"]


def test_no_windows_is_an_error():
    with pytest.raises(DataError, match="no window"):
        probe_scores(synthetic_windows().iloc[:0], ROWS, STAMPS[99], [{"a": STAMPS[149]}])
