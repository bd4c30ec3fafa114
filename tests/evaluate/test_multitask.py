"""Scoring the multitask head: per-class numbers by hand, and a tiny run end to end."""

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score

from chaosfm._config import parse_config
from chaosfm.data import validate
from chaosfm.evaluate import multitask_table, run_multitask
from chaosfm.evaluate._multitask import _class_scores
from chaosfm.train import MultitaskRunConfig, load_multitask_run, predict_history, prepare_multitask_data

ROWS = 900
STAMPS = pd.bdate_range("2001-01-01", periods=ROWS)


def synthetic_frame(seed=0):
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(0.01 * rng.standard_normal(ROWS)))
    return validate(pd.DataFrame({
        "asset": "a", "timestamp": STAMPS, "open": close, "high": close * 1.003, "low": close * 0.997,
        "close": close, "volume": rng.uniform(1e5, 1e6, ROWS),
    }))


def tiny_config():
    return parse_config(MultitaskRunConfig, {
        "data": "synthetic", "horizon": 20, "vol_horizon": 10, "threshold": 0.02, "cutoff": str(STAMPS[699].date()),
        "val_fraction": 0.2, "embargo": 3, "segment_length": 16, "burn_in": 8, "causal_checks": 1,
        "model": {"d_model": 16, "n_layers": 1, "d_state": 8, "head_dim": 8, "chunk_size": 8},
        "train": {"steps": 3, "batch_size": 4, "tbptt_segments": 2, "warmup_steps": 1, "log_every": 1},
    }, "test")


def test_class_scores_by_hand():
    part = pd.DataFrame({
        "asset": ["a"] * 5,
        "direction": [0, 1, 2, 2, 1],
        "predicted_direction": [0, 2, 2, 1, 1],
        "forward_return": [-0.10, 0.00, 0.08, 0.30, -0.02],
        "p10": [-0.05, -0.05, -0.05, -0.05, -0.05],
        "p90": [0.05, 0.05, 0.10, 0.10, 0.05],
        "forward_vol": [0.2, 0.1, 0.3, 0.2, 0.1],
        "predicted_vol": [0.1, 0.1, 0.3, 0.2, 0.2],
        "persistence_vol": [0.2, 0.2, 0.2, 0.2, 0.2],
    })
    scores = _class_scores(part, horizon=2, climatology=(-0.04, 0.06))
    assert scores["n_windows"] == 5 and scores["n_nonoverlapping"] == 3  # origins 0, 2, 4
    # recalls: down 1/1, flat 1/2, up 1/2
    assert np.isclose(scores["balanced_accuracy"], (1 + 0.5 + 0.5) / 3)
    assert np.isclose(scores["balanced_accuracy"], balanced_accuracy_score(part["direction"], part["predicted_direction"]))
    assert scores["confusion"] == [[1, 0, 0], [0, 1, 1], [0, 1, 1]]
    # inside [p10, p90]: rows 1, 2, 4
    assert np.isclose(scores["coverage_80"], 3 / 5)
    y, low = part["forward_return"].to_numpy(), part["p10"].to_numpy()
    expected = np.mean(np.maximum(0.1 * (y - low), -0.9 * (y - low)))
    assert np.isclose(scores["pinball_10"], expected)
    assert np.isclose(scores["climatology_coverage_80"], 2 / 5)  # rows 1 and 4 lie in [-0.04, 0.06]
    assert np.isclose(scores["vol_rmse"], np.sqrt((0.01 + 0.01) / 5))
    assert np.isclose(scores["persistence_vol_rmse"], np.sqrt((0.01 + 0.01 + 0.01) / 5))
    assert _class_scores(part.iloc[:0], 2, (-0.04, 0.06)) == {"n_windows": 0, "n_nonoverlapping": 0}


@pytest.mark.slow
def test_tiny_run_end_to_end(tmp_path):
    frame = synthetic_frame()
    config = tiny_config()
    out = tmp_path / "run"
    metrics = run_multitask(config, out, frame=frame)
    # the protocol's classes coincide with the purged splits
    assert metrics["split_by_class"]["train"] == {"in_sample": metrics["classes"]["in_sample"]["n_windows"]}
    assert set(metrics["split_by_class"]["validation"]) == {"within_pretrain"}
    assert set(metrics["split_by_class"]["test"]) == {"fresh"}
    fresh = metrics["classes"]["fresh"]
    # origins t with t+1 past cutoff row 699 and its embargo, and t + span on the last row 899 at most
    assert fresh["n_windows"] == (899 - config.span) - (699 + config.embargo) + 1
    assert 0 <= fresh["coverage_80"] <= 1 and len(fresh["confusion"]) == 3
    assert metrics["dropped_windows"]["warmup"] == 250
    for name in ("config.yaml", "meta.json", "model.eqx", "metrics.json", "table.csv", "predictions.csv", "log.jsonl"):
        assert (out / name).is_file()
    table = pd.read_csv(out / "table.csv")
    assert table["class"].tolist() == ["in_sample", "within_pretrain", "fresh"]
    assert table["windows"].tolist() == multitask_table(metrics)["windows"].tolist()
    assert table["windows"].tolist() == [metrics["classes"][c]["n_windows"] for c in table["class"]]
    # the saved run reloads (hashes checked) and reproduces its predictions
    model, scaler, meta = load_multitask_run(out)
    assert meta["kind"] == "multitask" and meta["trained_through"]["a"].startswith("2003-")
    assert meta["upstream_trained_through"]["a"] > meta["trained_through"]["a"]
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["classes"]["fresh"]["n_windows"] == fresh["n_windows"]
    predictions = pd.read_csv(out / "predictions.csv")
    data = prepare_multitask_data(frame, config)
    output = predict_history(model, data.features["a"][250:], config.segment_length)  # from the warm-up on
    last = predictions.iloc[-1]
    t = int(np.flatnonzero(data.timestamps["a"] == np.datetime64(last["origin"]))[0]) - 250
    p10 = output.quantiles[t, 0] * scaler["targets"]["return_std"] + scaler["targets"]["return_mean"]
    assert np.isclose(p10, last["p10"], rtol=1e-5)
