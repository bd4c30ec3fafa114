"""``chaosfm leakage`` end to end on a small slice: the fence is read back from the artifacts."""

import json

import pandas as pd
import pytest

from chaosfm._config import ConfigError
from chaosfm.data import load
from chaosfm.jobs import leakage
from chaosfm.jobs.leakage import LeakageConfig, leakage_tables

TINY_MODEL = dict(context_length=16, d_model=16, n_layers=1, d_state=8, head_dim=8, d_embed=8, d_pred=8,
                  min_future=4, max_future=8, min_span=2, max_span=4, cfm_horizon=3, cfm_steps=2)
TINY_TRAIN = dict(steps=3, batch_size=4, warmup_steps=0, checkpoint_every=3, log_every=1)


def _slice(tmp_path, name, start, end):
    frame = load(name)
    part = frame[(frame["timestamp"] >= start) & (frame["timestamp"] <= end)]
    path = tmp_path / f"{name}_slice.csv"
    part.drop(columns="asset").to_csv(path, index=False)
    return str(path)


def test_dates_outside_a_dataset_are_a_clear_error(tmp_path):
    path = _slice(tmp_path, "ndx", "1995-01-01", "1997-12-31")
    config = LeakageConfig(data=[path], pretrain_cutoff="2010-12-31", fresh_start="2014-12-31",
                           model=TINY_MODEL, train=TINY_TRAIN, out=tmp_path / "out")
    with pytest.raises(ConfigError, match=r"ndx_slice.*1995-01-03.*1997-12-31.*one date per dataset"):
        leakage.run(config)
    config = config.model_copy(update={"pretrain_cutoff": "other=1996-01-01", "fresh_start": "1997-01-01"})
    with pytest.raises(ConfigError, match="no date for 'ndx_slice'"):
        leakage.run(config)


@pytest.mark.slow
def test_leakage_study_end_to_end(tmp_path):
    path = _slice(tmp_path, "sp500", "2004-01-01", "2007-12-31")
    out = tmp_path / "study"
    config = LeakageConfig(
        data=[path], pretrain_cutoff="2005-12-30", fresh_start="2006-12-29", models=["jepa_cfm"],
        model=TINY_MODEL, train=TINY_TRAIN, horizon=3, num_samples=10, max_windows=40, n_bootstrap=100, out=out,
    )
    metrics = leakage.run(config)
    cutoff, fresh = pd.Timestamp("2005-12-30"), pd.Timestamp("2006-12-29")
    # The fence, read from what each artifact says it saw.
    fenced = json.loads((out / "runs" / "jepa_cfm-fenced" / "meta.json").read_text())["trained_through"]
    leaky = json.loads((out / "runs" / "jepa_cfm-leaky" / "meta.json").read_text())["trained_through"]
    assert all(pd.Timestamp(t) <= cutoff for t in fenced.values())
    assert all(cutoff < pd.Timestamp(t) < fresh for t in leaky.values())
    entry_leaky, entry_fenced = metrics["models"]["jepa_cfm (leaky)"], metrics["models"]["jepa_cfm (fenced)"]
    # Labels come from those records: the fenced encoder has no within-pretrain windows.
    assert entry_leaky["crps_pct"]["within_pretrain"]["n_windows"] > 0
    assert entry_fenced["crps_pct"]["within_pretrain"]["n_windows"] == 0
    assert entry_fenced["probe_r2"]["realized_vol"]["within_pretrain"]["n_windows"] == 0
    gap = entry_leaky["crps_pct"]["leakage_gap"]
    assert gap["ci_low"] <= gap["value"] <= gap["ci_high"]
    assert metrics["same_windows_leaky_minus_fenced"]["jepa_cfm"]["n_windows"] > 0
    tables = leakage_tables(metrics)
    for table in tables.values():
        assert list(table.columns) == ["model", "params", "in-domain", "within-pretrain OOS", "fresh OOS", "leakage gap"]
        assert list(table["model"]) == ["jepa_cfm (leaky)", "jepa_cfm (fenced)"]
    report = (out / "report.md").read_text()
    assert "| model | params | in-domain | within-pretrain OOS | fresh OOS | leakage gap |" in report
    # The default encoders normalise each window and carry the window-level VICReg terms, and
    # every pretrain reports the held-out check against the hinge's own target.
    saved = json.loads((out / "runs" / "jepa_cfm-fenced" / "model_config.json").read_text())
    assert saved["window_norm"] and saved["window_scale"] and saved["window_terms"]
    heldout = entry_fenced["pretrain"]["heldout"]
    assert heldout["all_dims_above_target"] == (heldout["std_min"] >= entry_fenced["pretrain"]["variance_target_std"])
    # A second run with the same config reuses the trained encoders...
    fenced_model = out / "runs" / "jepa_cfm-fenced" / "model.eqx"
    leaky_model = out / "runs" / "jepa_cfm-leaky" / "model.eqx"
    before, leaky_before = fenced_model.stat().st_mtime_ns, leaky_model.stat().st_mtime_ns
    # ...unless the model config it resolved to differs (a changed JEPAConfig default, simulated here).
    stale = out / "runs" / "jepa_cfm-leaky" / "model_config.json"
    stale.write_text(json.dumps({**json.loads(stale.read_text()), "window_norm": False}))
    leakage.run(config)
    assert fenced_model.stat().st_mtime_ns == before
    assert leaky_model.stat().st_mtime_ns != leaky_before
    assert json.loads(stale.read_text())["window_norm"] is True


@pytest.mark.slow
def test_leakage_study_on_codes_fits_one_fenced_tokenizer_per_protocol(tmp_path):
    path = _slice(tmp_path, "sp500", "2004-01-01", "2007-12-31")
    out = tmp_path / "study"
    config = LeakageConfig(
        data=[path], pretrain_cutoff="2005-12-30", fresh_start="2006-12-29", models=["jepa"], seed=3,
        model=TINY_MODEL, train=TINY_TRAIN, horizon=3, num_samples=10, max_windows=20, n_bootstrap=100, out=out,
        tokenizer={"kind": "fsq", "steps": 2, "options": {"batch_size": 4, "window": 32, "levels": [4, 4, 3]}},
    )
    metrics = leakage.run(config)
    # The study's one seed reaches every artifact: the study, both encoders, both tokenizers.
    metas = {meta.parent.relative_to(out).as_posix(): json.loads(meta.read_text()) for meta in out.rglob("meta.json")}
    assert {".", "runs/jepa-leaky", "runs/jepa-fenced", "tokenizers/leaky", "tokenizers/fenced"} <= set(metas)
    assert {name: meta["seed"] for name, meta in metas.items()} == {name: 3 for name in metas}
    # And fixes the results: a second study with the seed, in another folder, writes the same metrics.
    leakage.run(config.model_copy(update={"out": tmp_path / "again"}))
    assert (tmp_path / "again" / "metrics.json").read_bytes() == (out / "metrics.json").read_bytes()
    cutoff, fresh = pd.Timestamp("2005-12-30"), pd.Timestamp("2006-12-29")
    for protocol, limit in (("fenced", cutoff + pd.Timedelta(days=1)), ("leaky", fresh)):
        run = out / "runs" / f"jepa-{protocol}"
        meta = json.loads((run / "meta.json").read_text())
        # What the encoder's tokenizer saw, read from the artifact, stays inside the protocol's fence.
        seen = json.loads((run / "tokenizer" / "tokenizer.json").read_text())["trained_through"]
        assert meta["input"] == "codes" and seen == meta["upstream_trained_through"]
        assert all(pd.Timestamp(t) < limit for t in seen.values())
        assert (run / "tokenizer" / "model.eqx").read_bytes() == (out / "tokenizers" / protocol / "model.eqx").read_bytes()
    assert all(pd.Timestamp(t) > cutoff for t in json.loads(
        (out / "tokenizers" / "leaky" / "tokenizer.json").read_text())["trained_through"].values())
    entry_fenced = metrics["models"]["jepa (fenced)"]
    assert entry_fenced["input"] == "codes"
    assert entry_fenced["crps_pct"]["within_pretrain"]["n_windows"] == 0
    assert metrics["models"]["jepa (leaky)"]["crps_pct"]["within_pretrain"]["n_windows"] > 0


@pytest.mark.slow
def test_the_agent_study_scores_each_encoders_agent_by_class_and_pairs_them_on_the_same_dates(tmp_path):
    import numpy as np

    rng = np.random.default_rng(3)
    dates = pd.bdate_range("2012-01-02", periods=360)
    frames = [pd.DataFrame({"timestamp": dates.strftime("%Y-%m-%d"), "ticker": f"S{i}",
                            "close": 50 * np.exp(np.cumsum(0.01 * rng.standard_normal(len(dates))))})
              for i in range(5)]
    path = tmp_path / "stocks.csv"
    pd.concat(frames).to_csv(path, index=False)
    out = tmp_path / "study"
    cutoff, fresh = dates[179], dates[269]
    config = LeakageConfig(
        data=[str(path)], pretrain_cutoff=str(cutoff.date()), fresh_start=str(fresh.date()), models=["jepa_cfm"],
        model=TINY_MODEL, train=TINY_TRAIN, agent=True, agent_portfolios=4, n_bootstrap=100, out=out,
        agent_options={"env": {"n_assets": 3, "holding": 2, "episode_rebalances": 4}, "portfolios": 4,
                       "iterations": 2, "updates_per_iteration": 1},
    )
    metrics = leakage.run(config)
    agents = metrics["agents"]
    assert list(agents) == ["features only", "jepa_cfm (leaky)", "jepa_cfm (fenced)"]
    leaky, fenced, alone = agents["jepa_cfm (leaky)"], agents["jepa_cfm (fenced)"], agents["features only"]
    # Classes from the run folders: the leaky encoder saw up to the fresh start, so its agent's holds
    # from the cutoff's close to there are within-pretrain and its fresh period starts 5 rows
    # (the embargo) after the encoder's last row; the fenced encoder's agent has no within-pretrain rows.
    assert leaky["within_pretrain"]["from"] == str(dates[181].date())  # the first hold of 2 rows ends at 181
    assert pd.Timestamp(leaky["fresh"]["from"]) > fresh
    assert fenced["within_pretrain"] is None and alone["within_pretrain"] is None
    assert pd.Timestamp(fenced["fresh"]["from"]) < fresh
    assert pd.Timestamp(leaky["in_sample"]["to"]) <= cutoff + pd.offsets.BDay(2)
    assert all(pd.Timestamp(t) <= cutoff for t in fenced["encoder_trained_through"].values())
    gap = leaky["leakage_gap"]
    assert gap["ci_low"] <= gap["value"] <= gap["ci_high"]
    assert abs(gap["value"] - (leaky["fresh"]["sharpe"] - leaky["within_pretrain"]["sharpe"])) < 1e-9
    assert fenced["leakage_gap"]["value"] is None
    for entry in agents.values():
        assert 0 <= entry["fresh"]["dsr"] <= 1 and 0 <= entry["fresh"]["psr"] <= 1
    same = metrics["same_periods_leaky_minus_fenced"]
    assert set(same) == {"between cutoff and fresh start", "after fresh start"}
    for period in same.values():
        pair, sharpe = period["jepa_cfm"], period["features only (reference)"]["sharpe"]
        # The paired difference is of the two agents' Sharpe ratios on the very same dates.
        assert abs(pair["value"] - (sharpe["jepa_cfm (leaky)"] - sharpe["jepa_cfm (fenced)"])) < 1e-9
        assert pair["ci_low"] <= pair["value"] <= pair["ci_high"] and pair["n_dates"] > 3
    tables = leakage_tables(metrics)
    main = tables["agent Sharpe (annualised, ± 95% SE; years)"]
    assert list(main.columns) == ["agent on", "encoder params", "in-domain", "within-pretrain OOS", "fresh OOS",
                                  "fresh DSR", "leakage gap"]
    report = (out / "report.md").read_text()
    assert "# Leakage study: the agent" in report and "jepa_cfm: the leaky agent's Sharpe gap" in report
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(metrics))


def test_the_agent_key_names_an_agent_and_true_still_means_qrdqn():
    assert LeakageConfig(data=["sp500"], agent=True).agent == "qrdqn"
    assert LeakageConfig(data=["sp500"], agent="tdmpc2").agent == "tdmpc2"
    assert LeakageConfig(data=["sp500"], agent=False).agent is None and LeakageConfig(data=["sp500"]).agent is None
    with pytest.raises(ValueError, match=r"must be one of \['qrdqn', 'tdmpc2'\]"):
        LeakageConfig(data=["sp500"], agent="dqn")


@pytest.mark.slow
def test_the_agent_study_runs_tdmpc2_through_the_cli_with_dynamic_cvar_on_the_flow_encoders(tmp_path, capsys):
    import numpy as np
    import yaml

    from chaosfm.cli import main

    rng = np.random.default_rng(3)  # the fixture of the QR-DQN agent study above
    dates = pd.bdate_range("2012-01-02", periods=360)
    frames = [pd.DataFrame({"timestamp": dates.strftime("%Y-%m-%d"), "ticker": f"S{i}",
                            "close": 50 * np.exp(np.cumsum(0.01 * rng.standard_normal(len(dates))))})
              for i in range(5)]
    path = tmp_path / "stocks.csv"
    pd.concat(frames).to_csv(path, index=False)
    out = tmp_path / "study"
    # The prior's levels (actor: policy) keep the many small programs of the study quick to compile; the
    # MPPI actor runs end to end in tests/jobs/test_agent.py, through the same table (AGENTS).
    tdmpc2 = {"hidden": 8, "latent_dim": 8, "hidden_layers": 1, "num_q": 2, "num_quantiles": 4, "horizon": 2,
              "batch_size": 16, "actor": "policy", "no_trade": 0.0, "convergence_low": 0.0}
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump({
        "data": [str(path)], "pretrain_cutoff": str(dates[179].date()), "fresh_start": str(dates[269].date()),
        "models": ["jepa_cfm"], "model": TINY_MODEL, "train": TINY_TRAIN, "agent_portfolios": 4, "n_bootstrap": 100,
        "agent_options": {"env": {"n_assets": 3, "holding": 2, "episode_rebalances": 4}, "portfolios": 4,
                          "iterations": 2, "updates_per_iteration": 1, "tdmpc2": tdmpc2}}))
    assert main(["leakage", "--config", str(config), "--agent", "tdmpc2", "--out", str(out)]) == 0
    assert "agent Sharpe" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["agent"]["name"] == "tdmpc2" and metrics["agent"]["label"] == "TD-MPC2"
    agents = metrics["agents"]
    assert list(agents) == ["features only", "jepa_cfm (leaky)", "jepa_cfm (fenced)"]
    # The features alone have no convergence: a fixed CVaR level; each flow encoder's agent takes its
    # level from that encoder's convergence.
    assert agents["features only"]["alpha"] == 0.5 == metrics["agent"]["alpha"]
    for name in ("jepa_cfm (leaky)", "jepa_cfm (fenced)"):
        assert agents[name]["alpha"]["dynamic"].startswith("cvar_alpha")
    leaky, fenced = agents["jepa_cfm (leaky)"], agents["jepa_cfm (fenced)"]
    assert leaky["within_pretrain"]["from"] == str(dates[181].date()) and fenced["within_pretrain"] is None
    assert pd.Timestamp(leaky["fresh"]["from"]) > dates[269]
    gap = leaky["leakage_gap"]
    assert gap["ci_low"] <= gap["value"] <= gap["ci_high"]
    assert abs(gap["value"] - (leaky["fresh"]["sharpe"] - leaky["within_pretrain"]["sharpe"])) < 1e-9
    for period in metrics["same_periods_leaky_minus_fenced"].values():
        pair, sharpe = period["jepa_cfm"], period["features only (reference)"]["sharpe"]
        assert abs(pair["value"] - (sharpe["jepa_cfm (leaky)"] - sharpe["jepa_cfm (fenced)"])) < 1e-9
    assert "the agent: TD-MPC2, CVaR 0.5 on the features alone" in (out / "report.md").read_text()


@pytest.mark.slow  # two leakage studies (the two flow weights at the smallest size), a few steps each
def test_the_capacity_grid_runs_one_study_per_cell_from_the_command_line(tmp_path, capsys):
    from chaosfm.cli import main
    from chaosfm.jobs._capacity import JEPA_SIZES

    path = _slice(tmp_path, "sp500", "2004-01-01", "2007-12-31")
    out = tmp_path / "grid"
    model = ",".join(f"model.{k}={v}" for k, v in TINY_MODEL.items() if k not in JEPA_SIZES["nano"])
    args = ["leakage", "--data", path, "--cutoff", "2005-12-30", "--fresh-start", "2006-12-29", "--horizon", "3",
            "--fast", "--sizes", "nano", "--out", str(out)]
    for assignment in model.split(","):
        args += ["--set", assignment]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "capacity study" in printed and "capacity.md" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    cells = metrics["cells"]
    assert [(c["size"], c["cfm_weight"], c["model"]) for c in cells] == [("nano", 0.0, "jepa"), ("nano", 1.0, "jepa_cfm")]
    # Each cell is a whole leakage study: its encoders at that size and weight, its own numbers.
    for cell in cells:
        folder = out / "cells" / f"{cell['size']}-cfm{cell['cfm_weight']:g}"
        study = json.loads((folder / "metrics.json").read_text())
        leaky = study["models"][f"{cell['model']} (leaky)"]
        saved = json.loads((folder / "runs" / f"{cell['model']}-fenced" / "model_config.json").read_text())
        assert saved["d_model"] == JEPA_SIZES[cell["size"]]["d_model"] and saved["cfm_weight"] == cell["cfm_weight"]
        assert saved["context_length"] == TINY_MODEL["context_length"]  # the config's other keys still apply
        assert cell["params"] == leaky["params"]
        gap = leaky["crps_pct"]["leakage_gap"]
        assert (cell["crps_gap"], cell["crps_gap_low"], cell["crps_gap_high"]) == (gap["value"], gap["ci_low"], gap["ci_high"])
        same = study["same_windows_leaky_minus_fenced"][cell["model"]]
        assert cell["same_windows_n"] == same["n_windows"] > 0
        assert json.loads((folder / "runs" / f"{cell['model']}-leaky" / "log.jsonl").read_text().splitlines()[-1])["step"] == 3
    assert cells[1]["params"] > cells[0]["params"]  # the flow head's weights
    table = pd.read_csv(out / "capacity.csv")
    assert len(table) == 2 and {"crps_gap", "same_windows", "sharpe_gap"} <= set(table.columns)
    assert "| size | cfm weight |" in (out / "capacity.md").read_text()
    assert (out / "capacity.png").read_bytes().startswith(b"\x89PNG")


def test_the_fast_grid_varies_both_axes_on_small_budgets_and_each_cell_sets_its_size(tmp_path):
    from chaosfm.jobs._capacity import FAST_GRID, JEPA_SIZES, _cell_config, grid_of

    config, sizes, weights = grid_of(LeakageConfig(data=["sp500"], fast=True, out=tmp_path / "grid"))
    assert (sizes, weights) == (["nano", "tiny"], [0.0, 1.0])
    assert (config.train.steps, config.train.batch_size, config.max_windows) == (
        FAST_GRID["steps"], FAST_GRID["batch_size"], FAST_GRID["max_windows"])
    given, _, _ = grid_of(LeakageConfig(data=["sp500"], fast=True, max_windows=17, out=tmp_path / "grid"))
    assert given.max_windows == 17  # what the user set is kept
    cell = _cell_config(config, "tiny", 1.0)
    assert cell.models == ["jepa_cfm"] and cell.cfm_weight == 1.0 and not cell.fast
    assert {k: cell.model[k] for k in JEPA_SIZES["tiny"]} == JEPA_SIZES["tiny"]
    assert cell.out == tmp_path / "grid" / "cells" / "tiny-cfm1"
    assert _cell_config(config, "nano", 0.0).models == ["jepa"]


def test_the_capacity_grid_names_a_bad_size_or_weight(tmp_path):
    config = LeakageConfig(data=["sp500"], sizes="tiny,huge", out=tmp_path / "grid")
    with pytest.raises(ConfigError, match="sizes: unknown 'huge'; known: nano, tiny, small, medium"):
        leakage.run(config)
    with pytest.raises(ConfigError, match="cfm_weights: -1 is negative"):
        leakage.run(LeakageConfig(data=["sp500"], cfm_weights="0,-1", out=tmp_path / "grid"))
    with pytest.raises(ConfigError, match="leave out agent"):
        leakage.run(LeakageConfig(data=["sp500"], sizes="tiny", agent="qrdqn", out=tmp_path / "grid"))
