"""``chaosfm multitask`` end to end: a tiny run trained, scored per class, written and reloaded.

(Moved from tests/evaluate/test_multitask.py; the job's other tests are in tests/jobs/test_multitask.py.)
"""

import json

import numpy as np
import pandas as pd
import pytest

from chaosfm._config import parse_config
from chaosfm.data import validate
from chaosfm.evaluate import multitask_table
from chaosfm.jobs import multitask
from chaosfm.train import load_multitask_run, predict_history

ROWS = 900
STAMPS = pd.bdate_range("2001-01-01", periods=ROWS)


def synthetic_frame(seed=0):
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(0.01 * rng.standard_normal(ROWS)))
    return validate(pd.DataFrame({
        "asset": "a", "timestamp": STAMPS, "open": close, "high": close * 1.003, "low": close * 0.997,
        "close": close, "volume": rng.uniform(1e5, 1e6, ROWS),
    }))


def tiny_config(out):
    return parse_config(multitask.MultitaskRunConfig, {
        "data": "synthetic", "horizon": 20, "vol_horizon": 10, "threshold": 0.02, "cutoff": str(STAMPS[699].date()),
        "val_fraction": 0.2, "embargo": 3, "segment_length": 16, "burn_in": 8, "causal_checks": 1,
        "model": {"d_model": 16, "n_layers": 1, "d_state": 8, "head_dim": 8, "chunk_size": 8},
        "train": {"steps": 3, "batch_size": 4, "tbptt_segments": 2, "warmup_steps": 1, "log_every": 1},
        "out": str(out),
    }, "test")


@pytest.mark.slow
def test_tiny_run_end_to_end(tmp_path):
    frame = synthetic_frame()
    out = tmp_path / "run"
    config = tiny_config(out)
    metrics = multitask.run(config, frame=frame)
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
    # The held-out loss of the validation rows at every step (eval_every: a tenth of 3 steps, at least 1).
    logged = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "val_loss" in r] == [1, 2, 3]
    assert metrics["final_val_loss"] == logged[-1]["val_loss"]
    assert (out / "loss.png").read_bytes().startswith(b"\x89PNG")
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
    data = multitask.prepare(frame, config)
    output = predict_history(model, data.features["a"][250:], config.segment_length)  # from the warm-up on
    last = predictions.iloc[-1]
    t = int(np.flatnonzero(data.timestamps["a"] == np.datetime64(last["origin"]))[0]) - 250
    low = output.quantiles[t, 0] * scaler["targets"]["return_std"] + scaler["targets"]["return_mean"]
    assert np.isclose(low, last["0.1"], rtol=1e-5)
    assert {"0.1", "0.9"} <= set(predictions.columns) and not {"p10", "p90"} & set(predictions.columns)
