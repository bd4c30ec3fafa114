"""``chaosfm agent train`` / ``agent eval`` on a small close-only universe."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml

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
    for entry in metrics["books"].values():
        assert {"sharpe", "sharpe_se", "sharpe_ci", "psr", "hit_rate", "turnover", "costs",
                "max_drawdown"} <= set(entry)
    # The fresh calendar, by the evaluator's rule: the fence row is 319, rows 320-323 are the 5-row
    # embargo (a hold's first target must have 5 unseen rows before it), rebalances from row 324 to
    # 398 every 2 rows, one dated return per book.
    rebalances = (399 - 324) // 2
    assert metrics["rebalances"] == rebalances and "mvx" not in metrics and "within_pretrain" not in metrics
    returns = pd.read_parquet(run / "eval" / "returns.parquet")
    assert list(returns.columns) == ["book", "timestamp", "window_class", "net", "turnover", "cost"]
    assert pd.api.types.is_datetime64_any_dtype(returns["timestamp"]) and set(returns["window_class"]) == {"fresh"}
    assert len(returns) == 3 * rebalances and np.isfinite(returns["net"]).all()
    dates = pd.bdate_range("2015-01-01", periods=400)
    for _, book in returns.groupby("book"):  # each hold ends 2 rows after its rebalance
        assert list(book["timestamp"]) == list(dates[324 + 2:400:2][:rebalances])
    assert json.loads((run / "eval" / "metrics.json").read_text()) == metrics
    report = (run / "eval" / "report.html").read_text()
    assert "<h2>Backtest</h2>" in report and "<h3>agent</h3>" in report and "<h3>momentum</h3>" not in report
    assert "momentum" in report and "3 strategies tried (the agent and two reference books)" in report


def test_an_encoder_run_adds_features_labels_what_it_saw_and_gates_by_its_convergence(universe, tmp_path,
                                                                                        monkeypatch):
    from types import SimpleNamespace

    from chaosfm.agents import EncoderFeatures
    from chaosfm.jobs import _agent_panel

    dates = pd.bdate_range("2015-01-01", periods=400)
    calls = {}

    def load_pretrained(run):  # a pretrained JEPA with a flow head that saw 20 rows past the agent's fence
        calls["run"] = str(run)
        return SimpleNamespace(flow=object()), None, {"trained_through": {f"S{i}": dates[339] for i in range(6)}}

    def encoder_features(model, inputs, frame, stamps, names, *, convergence, key):
        calls.update(rows=len(stamps), names=list(names), convergence=convergence)
        rng = np.random.default_rng(0)
        embeddings = rng.standard_normal((len(stamps), len(names), 2))
        embeddings[:10] = np.nan  # warm-up: no full context yet
        values = rng.uniform(size=(len(stamps), len(names)))
        values[:, 0] = np.nan
        return EncoderFeatures(embeddings, values if convergence else None)

    monkeypatch.setattr(_agent_panel, "load_pretrained", load_pretrained)
    monkeypatch.setattr(_agent_panel, "encoder_features", encoder_features)
    summary = agent.train(_config(universe, tmp_path / "run", encoder="runs/jepa"))
    assert calls == {"run": "runs/jepa", "rows": 400, "names": [f"S{i}" for i in range(6)], "convergence": False}
    assert summary["encoder"]["trained_through"]["S0"].startswith(str(dates[339].date()))
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta["upstream_trained_through"]["S3"].startswith(str(dates[339].date()))
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["encoder"] == "runs/jepa"

    metrics = agent.evaluate(agent.AgentEvalConfig(run=tmp_path / "run", portfolios=4, mvx_thresholds="0.0,0.5,2"))
    assert calls["convergence"] is True
    # Holds from rows 319..338 (the fence row's close on) have first targets the encoder saw:
    # within-pretrain (no embargo: the agent's own rows end at 319), scored apart; fresh starts 5
    # unseen rows after the encoder's last row 339, at row 344.
    assert metrics["within_pretrain"]["from"].startswith(str(dates[319].date()))
    assert metrics["fresh_from"].startswith(str(dates[344].date()))
    returns = pd.read_parquet(tmp_path / "run" / "eval" / "returns.parquet")
    classes = returns[returns["book"] == "agent"].set_index("timestamp")["window_class"]
    assert classes[classes == "within_pretrain"].index.max() < classes[classes == "fresh"].index.min()
    gate = metrics["mvx"]
    entries = gate["thresholds"]
    assert [e["threshold"] for e in entries] == [0.0, 0.5, 2.0] and sum(e["chosen"] for e in entries) == 1
    assert entries[2]["traded_fraction"] == 0 and entries[2]["train_sharpe"] is None and not entries[2]["chosen"]
    assert gate["chosen_threshold"] in (0.0, 0.5)
    assert 0 < entries[1]["traded_fraction"] < entries[0]["traded_fraction"] < 1  # asset S0 is never known
    assert json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text()) == metrics


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
    assert main(["agent", "eval", "--run", str(out), "--portfolios", "4", "--mvx-thresholds", "0.2,0.4"]) == 2
    assert "MVX thresholds need an agent trained with an `encoder` run" in capsys.readouterr().err
    assert main(["agent", "eval", "--run", str(out), "--mvx-thresholds", "0.2,high"]) == 2
    assert "mvx_thresholds" in capsys.readouterr().err


@pytest.mark.slow
def test_tdmpc2_trains_and_evaluates_through_the_cli_and_never_trains_past_the_fence(universe, tmp_path, capsys):
    config = tmp_path / "tdmpc2.yaml"
    config.write_text("env: {n_assets: 4, holding: 2, episode_rebalances: 4}\nportfolios: 4\niterations: 2\n"
                      "updates_per_iteration: 1\ntdmpc2: {hidden: 8, latent_dim: 8, hidden_layers: 1, num_q: 2, "
                      "num_quantiles: 4, horizon: 2, batch_size: 16, alpha: 0.3}\n")
    run = tmp_path / "run"
    assert main(["agent", "train", "--agent", "tdmpc2", "--config", str(config), "--data", str(universe),
                 "--out", str(run)]) == 0
    assert {"config.yaml", "model.eqx", "weights.json", "history.csv", "train.json", "meta.json"} <= {
        p.name for p in run.iterdir()}
    assert yaml.safe_load((run / "config.yaml").read_text())["agent"] == "tdmpc2"
    assert json.loads((run / "weights.json").read_text())["action_dim"] == 1
    fence = pd.bdate_range("2015-01-01", periods=400)[319]  # each asset's row at 80%, as the QR-DQN run's
    meta = json.loads((run / "meta.json").read_text())
    assert all(pd.Timestamp(seen) <= fence for seen in meta["trained_through"].values())
    train = json.loads((run / "train.json").read_text())
    assert pd.Timestamp(train["fence"]) == fence and train["trained_rows"][1] <= 319
    history = pd.read_csv(run / "history.csv")
    assert len(history) == 2 and (history["last_row"] <= 319).all() and np.allclose(history["alpha"], 0.3)

    assert main(["agent", "eval", "--run", str(run), "--portfolios", "4"]) == 0
    assert "momentum" in capsys.readouterr().out
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert metrics["agent"] == "tdmpc2" and metrics["alpha"] == 0.3 and pd.Timestamp(metrics["fresh_from"]) > fence
    assert metrics["rebalances"] == (399 - 324) // 2 and set(metrics["books"]) == {"agent", "equal_weight", "momentum"}
    assert metrics["books"]["agent"]["non_flat_fraction"] == 1.0  # no encoder: every asset is traded
    returns = pd.read_parquet(run / "eval" / "returns.parquet")
    assert set(returns["window_class"]) == {"fresh"} and np.isfinite(returns["net"]).all()
    assert "<h3>agent</h3>" in (run / "eval" / "report.html").read_text()
    assert main(["agent", "eval", "--run", str(run), "--mvx-thresholds", "0.2"]) == 2
    assert "the MVX gate applies to agent qrdqn" in capsys.readouterr().err
    assert main(["agent", "train", "--agent", "tdmpc2", "--data", str(universe), "--set", "tdmpc2.latent=8",
                 "--out", str(tmp_path / "y")]) == 2
    assert "tdmpc2: unknown key(s) ['latent']" in capsys.readouterr().err


@pytest.mark.slow
def test_tdmpc2_eval_writes_one_telemetry_row_per_decision_at_the_alpha_of_its_convergence(universe, tmp_path,
                                                                                            monkeypatch):
    from types import SimpleNamespace

    from chaosfm.agents import EncoderFeatures
    from chaosfm.jobs import _agent_panel

    rng = np.random.default_rng(1)
    scores = {name: rng.uniform(0.0, 1.0, size=(400, 6)) for name in ("convergence", "bifurcation", "lyapunov")}
    scores["convergence"][:, 1] = np.nan  # asset S1's convergence is never known: never traded

    def load_pretrained(run):  # an encoder with a flow head that saw no row past the agent's fence
        return SimpleNamespace(flow=object()), None, {"trained_through": {f"S{i}": "2015-03-01" for i in range(6)}}

    def encoder_features(model, inputs, frame, stamps, names, *, convergence, key):
        embeddings = np.random.default_rng(0).standard_normal((len(stamps), len(names), 2))
        return EncoderFeatures(embeddings, *(scores[name] if convergence else None for name in scores))

    monkeypatch.setattr(_agent_panel, "load_pretrained", load_pretrained)
    monkeypatch.setattr(_agent_panel, "encoder_features", encoder_features)
    tdmpc2 = {"hidden": 8, "latent_dim": 8, "hidden_layers": 1, "num_q": 2, "num_quantiles": 4, "horizon": 2,
              "batch_size": 16, "plan_horizon": 1, "plan_iterations": 1, "plan_samples": 8, "plan_elites": 2,
              "plan_policy_samples": 2}
    config = _config(universe, tmp_path / "run", agent="tdmpc2", encoder="runs/jepa", iterations=2,
                     updates_per_iteration=1, tdmpc2=tdmpc2)
    agent.train(config)
    metrics = agent.evaluate(agent.AgentEvalConfig(run=tmp_path / "run", portfolios=3))
    telemetry = pd.read_parquet(tmp_path / "run" / "eval" / "telemetry.parquet")
    assert list(telemetry.columns) == list(agent.TELEMETRY_COLUMNS)
    # One row per decision: every rebalance of the fresh calendar, portfolio and asset of a portfolio.
    assert len(telemetry) == metrics["rebalances"] * 3 * 4 and set(telemetry["window_class"]) == {"fresh"}
    dates = pd.bdate_range("2015-01-01", periods=400)
    assert telemetry["timestamp"].min() == dates[324] and (telemetry["hold_end"] - telemetry["timestamp"]).max() \
        <= pd.Timedelta(days=4)  # 2-row holds on business days
    assert telemetry.groupby(["timestamp", "portfolio"]).size().eq(4).all()
    # The scores are the encoder's at the decision's (row, asset), looked up here by date and name.
    rows = dates.get_indexer(telemetry["timestamp"])
    columns = telemetry["asset"].str[1:].astype(int).to_numpy()
    for name, values in scores.items():
        np.testing.assert_allclose(telemetry[name], values[rows, columns], rtol=1e-6)
    # alpha is the configured map of the logged convergence (recomputed here), and unknown is flat.
    saved = json.loads((tmp_path / "run" / "weights.json").read_text())  # the map the run was configured with
    low, high, alpha_min, alpha_max = (saved[k] for k in ("convergence_low", "convergence_high", "alpha_min",
                                                          "alpha_max"))
    c = telemetry["convergence"].to_numpy()
    expected = np.where(np.isfinite(c), alpha_min + (alpha_max - alpha_min) * np.clip((c - low) / (high - low), 0, 1),
                        alpha_min)
    np.testing.assert_allclose(telemetry["alpha"], expected, rtol=1e-6)
    traded = np.isfinite(c) & (c >= saved["no_trade"])
    np.testing.assert_array_equal(telemetry["traded"], traded)
    assert (telemetry.loc[~traded, ["action", "weight"]] == 0).all().all()
    assert telemetry["action"].abs().max() <= 1 and np.isfinite(telemetry["reward"]).all()
    assert (telemetry["gross_exposure"] <= 1 + 1e-6).all()
    # The agent trades by MPPI: its planned levels are not the prior's.
    assert (telemetry.loc[traded, "action"] != telemetry.loc[traded, "prior_action"]).mean() > 0.5
