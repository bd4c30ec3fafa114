"""``chaosfm agent train`` / ``agent eval`` on a small close-only universe."""

import json

import numpy as np
import pandas as pd
import pytest

from chaosfm._artifacts import ArtifactError
from chaosfm._config import ConfigError
from chaosfm.cli import main
from chaosfm.jobs import agent


@pytest.fixture(scope="module")
def universe(tmp_path_factory):
    rng = np.random.default_rng(0)
    dates = pd.bdate_range("2015-01-01", periods=400)
    rows = [pd.DataFrame({"timestamp": dates.strftime("%Y-%m-%d"), "ticker": f"S{i}",
                          "close": 100 * np.exp(np.cumsum(0.01 * rng.standard_normal(len(dates))))})
            for i in range(6)]
    path = tmp_path_factory.mktemp("universe") / "stocks.csv"
    pd.concat(rows).to_csv(path, index=False)
    return path


def _config(universe, out, **values):
    return agent.read(None, {"data": str(universe), "out": str(out), "env": {"n_assets": 4, "holding": 2,
                             "episode_rebalances": 4}, "portfolios": 4, "iterations": 3,
                             "updates_per_iteration": 2, **values})


def test_train_then_eval_write_their_folders_and_never_train_past_the_fence(universe, tmp_path):
    summary = agent.train(_config(universe, tmp_path / "run"))
    run = tmp_path / "run"
    assert {"config.yaml", "model.eqx", "history.csv", "train.json", "meta.json"} <= {p.name for p in run.iterdir()}
    meta = json.loads((run / "meta.json").read_text())
    fence = pd.Timestamp(summary["fence"])
    # 400 rows per asset: the default fence is each asset's row at 80%, the 320th day.
    assert fence == pd.bdate_range("2015-01-01", periods=400)[319]
    assert all(pd.Timestamp(seen) <= fence for seen in meta["trained_through"].values())
    assert summary["trained_rows"][1] <= 319
    metrics = agent.evaluate(agent.AgentEvalConfig(run=run, portfolios=8))
    assert pd.Timestamp(metrics["fresh_from"]) > fence
    assert set(metrics["books"]) == {"agent", "equal_weight", "momentum"}
    returns = pd.read_parquet(run / "eval" / "returns.parquet")
    assert len(returns) == 3 * 8 * 4 and np.isfinite(returns["return"]).all()
    assert json.loads((run / "eval" / "metrics.json").read_text()) == metrics


def test_bad_settings_and_damaged_runs_are_named(universe, tmp_path):
    with pytest.raises(ConfigError, match="n_asets"):
        agent.train(agent.read(None, {"data": str(universe), "env": {"n_asets": 4}, "out": str(tmp_path / "x")}))
    agent.train(_config(universe, tmp_path / "run"))
    weights = tmp_path / "run" / "model.eqx"
    weights.write_bytes(weights.read_bytes()[:-8])
    with pytest.raises(ArtifactError, match="model.eqx"):
        agent.evaluate(agent.AgentEvalConfig(run=tmp_path / "run"))
    with pytest.raises(ConfigError, match="no model.eqx"):
        agent.evaluate(agent.AgentEvalConfig(run=tmp_path))


def test_the_cli_runs_both_and_exits_2_on_bad_input(universe, tmp_path, capsys):
    config = tmp_path / "agent.yaml"
    config.write_text("env: {n_assets: 4, holding: 2, episode_rebalances: 4}\nportfolios: 4\niterations: 2\n"
                      "updates_per_iteration: 1\n")
    out = tmp_path / "run"
    assert main(["agent", "train", "--config", str(config), "--data", str(universe), "--out", str(out)]) == 0
    assert main(["agent", "eval", "--run", str(out), "--portfolios", "4"]) == 0
    assert "momentum" in capsys.readouterr().out
    assert main(["agent", "train", "--data", str(universe), "--set", "env.holding=0", "--out", str(tmp_path / "y")]) == 2
    assert "holding" in capsys.readouterr().err
