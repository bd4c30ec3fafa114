"""``chaosfm evaluate`` in-process: the run folder, the default cutoff, errors before any output."""

import json

import numpy as np
import pandas as pd
import pytest

from chaosfm._config import ConfigError
from chaosfm.jobs import evaluate
from chaosfm.jobs._common import DEFAULT_CUTOFF_FRACTION


def write_market(path, n=120):
    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(0.01 * rng.standard_normal(n)))
    pd.DataFrame({
        "timestamp": pd.date_range("2020-01-01", periods=n, freq="D").strftime("%Y-%m-%d"),
        "open": close, "high": close * 1.01, "low": close * 0.99, "close": close, "volume": 1.0,
    }).to_csv(path, index=False)
    return path


def small(tmp_path, **values):
    data = {
        "datasets": [{"name": str(write_market(tmp_path / "market.csv"))}],
        "models": ["random_walk", "last_value"],
        "protocol": {"horizon": 3, "num_samples": 8, "context_length": 30, "min_context": 25, "step": 3,
                     "embargo": 2},
        "out": str(tmp_path / "eval"),
    }
    return evaluate.read(None, {**data, **values})


def test_evaluate_writes_its_run_folder_with_the_default_cutoff(tmp_path):
    config = small(tmp_path)
    assert config.cutoff_fraction == DEFAULT_CUTOFF_FRACTION == 0.8
    metrics = evaluate.run(config)
    out = tmp_path / "eval"
    assert {"metrics.json", "scores.parquet", "report.html", "config.yaml", "meta.json"} <= {
        p.name for p in out.iterdir()}
    assert json.loads((out / "metrics.json").read_text()) == metrics
    (entry,) = metrics["datasets"].values()
    assert set(entry["models"]) == {"random_walk", "last_value"}
    assert entry["models"]["last_value"]["fresh"]["n_windows"] > 0
    # 120 daily rows: the default fence is the row at 80%, 2020-04-05 (row 96, the 96th day).
    meta = json.loads((out / "meta.json").read_text())
    (seen,) = meta["trained_through"].values()
    assert seen == {"market": "2020-04-05T00:00:00"}
    scores = pd.read_parquet(out / "scores.parquet")
    assert set(scores["model"]) == {"random_walk", "last_value"}


def test_bad_models_and_cutoffs_fail_before_the_run_folder_is_made(tmp_path):
    with pytest.raises(ConfigError, match="unknown model"):
        evaluate.run(small(tmp_path, models=["oracle"]))
    with pytest.raises(ConfigError, match="cutoff"):
        evaluate.run(small(tmp_path, cutoff="1990-01-01"))
    assert not (tmp_path / "eval").exists()
    with pytest.raises(ConfigError, match="datasets"):
        evaluate.read(None, {"datasets": []})
