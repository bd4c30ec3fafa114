"""The command line: exit codes, one-line errors, every command's help, ``--set`` and the common
flags, and the demo end to end."""

import argparse
import json
from pathlib import Path

import pandas as pd
import pytest

from chaosfm.cli import build_parser, main
from chaosfm.cli._parser import location


def write_candles(path, broken=None):
    frame = pd.DataFrame({
        "Date": pd.date_range("2021-01-01", periods=5, freq="D").strftime("%Y-%m-%d"),
        "Open": [10.0, 11, 12, 13, 14], "High": [11.0, 12, 13, 14, 15],
        "Low": [9.0, 10, 11, 12, 13], "Close": [10.5, 11.5, 12.5, 13.5, 14.5],
        "Volume": [100.0, 100, 100, 100, 100],
    })
    if broken == "high":
        frame.loc[2, "High"] = 12.0
    if broken == "volume":
        frame.loc[4, "Volume"] = -5.0
    frame.to_csv(path, index=False)


def test_data_check_exit_codes(tmp_path, capsys):
    good = tmp_path / "good.csv"
    write_candles(good)
    assert main(["data", "check", str(good)]) == 0
    bad = tmp_path / "bad.csv"
    write_candles(bad, broken="high")
    assert main(["data", "check", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.csv" in err[0] and "row 2 (line 4)" in err[0] and "high" in err[0]
    write_candles(bad, broken="volume")
    assert main(["data", "check", str(bad)]) == 2
    assert "volume >= 0" in capsys.readouterr().err


def test_usage_and_config_errors_exit_2(tmp_path, capsys):
    assert main(["no-such-command"]) == 2
    assert main(["evaluate", "--data", "sp500", "--models", "oracle"]) == 2
    assert "unknown model" in capsys.readouterr().err
    assert main(["evaluate"]) == 2


def test_debug_shows_trace(tmp_path, capsys):
    assert main(["--debug", "data", "check", str(tmp_path / "missing.csv")]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_multitask_bad_input_exits_2_naming_the_key(tmp_path, capsys):
    out = str(tmp_path / "mt")
    assert main(["multitask", "--data", "sp500", "--horizon", "0", "--out", out]) == 2
    assert "horizon" in capsys.readouterr().err
    # a cutoff that leaves too few rows for warm-up and labels fails before any training
    assert main(["multitask", "--data", "sp500", "--cutoff", "1999-06-01", "--out", out]) == 2
    err = capsys.readouterr().err
    assert "cutoff" in err and "rows up to the cutoff" in err


@pytest.mark.slow
def test_demo_fast_writes_metrics_and_report(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--fast", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["datasets"]) == {"sp500", "lorenz63"}
    sp500 = metrics["datasets"]["sp500"]
    assert sp500["cutoff"].startswith("2014-12-31") and isinstance(sp500["embargo"], int)
    for model, entry in sp500["models"].items():
        for window_class in ("in_sample", "within_pretrain", "fresh"):
            assert {"crps", "mase", "coverage_80", "n_windows"} <= set(entry[window_class])
        assert set(entry["leakage_gap"]["crps"]) == {"value", "ci_low", "ci_high"}
        assert entry["fresh"]["n_windows"] > 10
    lorenz = metrics["datasets"]["lorenz63"]["models"]
    for entry in lorenz.values():
        assert {"valid_prediction_time", "smape", "crps"} <= set(entry["fresh"])
    assert (lorenz["context_parroting"]["fresh"]["valid_prediction_time"]
            > lorenz["last_value"]["fresh"]["valid_prediction_time"])
    # A tiny GPT and Mamba are trained on lorenz63 (the full demo adds sp500 ones), fenced at the
    # demo's cutoff, and scored beside the baselines: no window is within-pretrain for them.
    assert set(metrics["code_models"]) == {"lorenz-gpt", "lorenz-mamba"}
    for kind in ("gpt", "mamba"):
        name = f"{kind}:lorenz-{kind}"
        assert lorenz[name]["fresh"]["n_windows"] >= lorenz["last_value"]["fresh"]["n_windows"] > 0
        assert lorenz[name]["within_pretrain"]["n_windows"] == 0
        heldout = metrics["code_models"][f"lorenz-{kind}"]["heldout"]
        assert heldout["perplexity"] < 0.5 * heldout["unigram_perplexity"]
    # The Mamba reused the GPT's tokenizer, and a second demo in the folder reuses the models.
    models = out / "models-fast"
    assert (models / "lorenz-mamba" / "tokenizer" / "tokenizer.json").read_bytes() == (
        models / "lorenz-gpt" / "tokenizer" / "tokenizer.json").read_bytes()
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64") >= 4 and "leakage gap" in html.lower()


def _tiny_train_config(path, **model):
    import yaml

    config = {
        "data": {"names": ["lorenz63"], "options": {"length": 700}, "embargo": 5},
        "tokenizer": {"kind": "bins", "options": {"vocab_size": 34, "kind": "quantile"}},
        "model": {"kind": "gpt", "context_length": 24, "d_model": 32, "n_layers": 1, **model},
        "train": {"steps": 3, "batch_size": 4, "warmup_steps": 1, "checkpoint_every": 3, "log_every": 1},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_train_generate_forecast_evaluate_run(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--config", str(_tiny_train_config(tmp_path / "c.yaml")), "--out", str(run)]) == 0
    assert "held-out perplexity" in capsys.readouterr().out
    assert json.loads((run / "metrics.json").read_text())["heldout"]["unigram_perplexity"] > 0

    assert main(["generate", "--run", str(run), "--prompt", "10 11 12", "-n", "6", "--num-samples", "2",
                 "--top-k", "5", "--seed", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all(len(line.split()) == 6 for line in lines)
    assert all(0 <= int(c) < 34 for line in lines for c in line.split())
    assert main(["generate", "--run", str(run), "--prompt", "99"]) == 2
    assert "vocabulary" in capsys.readouterr().err

    data = tmp_path / "lorenz.csv"
    from chaosfm.data import load

    load("lorenz63", length=700).to_csv(data, index=False)
    out = tmp_path / "forecast.csv"
    assert main(["forecast", "--run", str(run), "--data", str(data), "--horizon", "4", "--num-samples", "8",
                 "--context-length", "100", "--out", str(out)]) == 0
    table = pd.read_csv(out)
    assert len(table) == 4 * 3 and {"0.1", "0.5", "0.9", "mean"} <= set(table.columns)
    assert (table["0.1"] <= table["0.9"]).all()

    evaluated = tmp_path / "eval"
    assert main(["evaluate", "--data", str(data), "--run", str(run), "--models", "last_value",
                 "--horizon", "5", "--num-samples", "4", "--every", "100", "--context-length", "60",
                 "--out", str(evaluated)]) == 0
    models = json.loads((evaluated / "metrics.json").read_text())["datasets"]
    assert any(name.startswith("gpt:") for entry in models.values() for name in entry["models"])


def test_train_bad_config_exit_2(tmp_path, capsys):
    config = _tiny_train_config(tmp_path / "c.yaml", vocab_size=77)
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "r")]) == 2
    assert "model.vocab_size" in capsys.readouterr().err
    config.write_text(config.read_text().replace("embargo", "embargoo"))
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "r")]) == 2
    assert "data.embargoo" in capsys.readouterr().err


def write_closes(path, assets=("A", "B"), rows=300):
    """A close-only CSV (Date, Ticker, Close): random walks, one block per asset."""
    import numpy as np

    rng = np.random.default_rng(5)
    pd.concat([
        pd.DataFrame({"Date": pd.bdate_range("2010-01-04", periods=rows).strftime("%Y-%m-%d"), "Ticker": asset,
                      "Close": 50.0 * np.exp(np.cumsum(0.01 * rng.standard_normal(rows)))})
        for asset in assets
    ]).to_csv(path, index=False)


def test_close_only_data_checks_evaluates_the_close_models_and_refuses_har_rv(tmp_path, capsys):
    assert main(["data", "check", "sp500_stocks"]) == 0
    out = capsys.readouterr().out
    assert "sp500_stocks: market data, 166,260 rows, 20 asset(s)" in out and "XOM: 8,313 rows" in out
    closes = tmp_path / "closes.csv"
    write_closes(closes)
    assert main(["evaluate", "--data", str(closes), "--models", "random_walk,garch,ar", "--horizon", "5",
                 "--every", "50", "--num-samples", "50", "--skip-in-sample", "--out", str(tmp_path / "ev")]) == 0
    scored = json.loads((tmp_path / "ev" / "metrics.json").read_text())["datasets"]["closes"]["models"]
    assert set(scored) == {"random_walk", "garch", "ar"}
    assert all(scored[name]["fresh"]["n_windows"] > 0 and scored[name]["fresh"]["crps"] > 0 for name in scored)
    capsys.readouterr()
    assert main(["evaluate", "--data", "sp500_stocks", "--models", "har_rv", "--out", str(tmp_path / "har")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "har_rv" in err[0]
    assert "needs open, high and low columns; this frame has close only" in err[0]


@pytest.mark.slow  # one predictor compile, as the test below
def test_stream_reads_a_close_only_csv_of_one_asset(tmp_path):
    closes = tmp_path / "ko.csv"
    write_closes(closes, assets=("KO",), rows=80)
    pd.read_csv(closes).drop(columns=["Ticker"]).to_csv(closes, index=False)
    config = tmp_path / "stream.yaml"
    config.write_text("plot: false\npredictor:\n  dgm:\n    fit_steps: 0\n")
    assert main(["stream", "--data", str(closes), "--config", str(config), "--no-compilation-cache",
                 "--out", str(tmp_path / "run")]) == 0
    predictions = pd.read_csv(tmp_path / "run" / "predictions.csv")
    # Every number is filled but `line`, which only a stdin or feed stream has (file mode: `row`).
    assert len(predictions) > 0 and predictions.drop(columns="line").select_dtypes("number").notna().any().all()


@pytest.mark.slow  # ~20-30 s alone (one predictor compile); shares tests/predictor's compile in the suite
def test_stream_snapshot_restore_equals_one_run(tmp_path, capsys):
    import numpy as np

    values = 100.0 + np.cumsum(np.random.default_rng(0).standard_normal(60))
    data = tmp_path / "walk.csv"
    pd.DataFrame({"timestamp": pd.date_range("2020-01-01", periods=60, freq="D").strftime("%Y-%m-%d"),
                  "x0": values}).to_csv(data, index=False)
    config = tmp_path / "stream.yaml"
    config.write_text("plot: false\npredictor:\n  dgm:\n    fit_steps: 0\n")
    common = ["stream", "--data", str(data), "--config", str(config), "--no-compilation-cache"]
    snapshot = tmp_path / "s.msgpack"
    assert main([*common, "--out", str(tmp_path / "whole")]) == 0
    assert main([*common, "--length", "40", "--snapshot", str(snapshot), "--snapshot-every", "10",
                 "--out", str(tmp_path / "head")]) == 0
    assert main([*common, "--restore", str(snapshot), "--out", str(tmp_path / "tail")]) == 0
    read = lambda name: pd.read_csv(tmp_path / name / "predictions.csv")  # noqa: E731
    resumed = pd.concat([read("head"), read("tail")], ignore_index=True)
    pd.testing.assert_frame_equal(resumed, read("whole"), check_exact=True)
    metrics = json.loads((tmp_path / "tail" / "metrics.json").read_text())
    assert metrics["startup_seconds"] > 0 and metrics["first_step_ms"] > 0
    # A damaged snapshot: exit 2, one line naming the file and the damage.
    snapshot.write_bytes(snapshot.read_bytes()[:-3] + b"\x00\x00\x00")
    capsys.readouterr()
    assert main([*common, "--restore", str(snapshot), "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert str(snapshot) in err and "checksum mismatch" in err
    assert main([*common, "--snapshot-every", "5", "--out", str(tmp_path / "bad")]) == 2
    assert "snapshot_every needs snapshot" in capsys.readouterr().err


@pytest.mark.slow
def test_tune_scores_the_real_predictor_walk_forward_and_writes_a_stream_config(tmp_path, capsys):
    import numpy as np
    import yaml

    from chaosfm._config import read_config
    from chaosfm.jobs.tune import TuneConfig, tuning_frame
    from chaosfm.evaluate import WalkForwardValidator
    from chaosfm.predictor import OnlinePredictorForecaster, StreamConfig

    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"compilation_cache": False, "predictor": {"dgm": {"fit_steps": 0}}}))
    flags = ["--data", "sp500", "--length", "100", "--max-memory", "64", "--horizon", "3", "--max-windows", "2",
             "--num-samples", "16", "--trials", "1", "--base", str(base), "--out", str(tmp_path / "tune")]
    assert main(["tune", *flags]) == 0
    assert "best crps" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "tune" / "metrics.json").read_text())
    trials = pd.read_csv(tmp_path / "tune" / "trials.csv")
    # One trial: a compile of the step per sampled config; sampling is tested on a cheap objective.
    assert metrics["trials"]["complete"] == 1 and metrics["folds"] == 2
    assert metrics["best_value"] == metrics["base_value"] == trials["value"].item()
    # The default cutoff of every command (was 70% for tune): the first 4024 of 5031 rows (80%).
    assert metrics["trained_through"] == {"sp500": "2014-12-30T00:00:00"}
    best = read_config(StreamConfig, tmp_path / "tune" / "best.yaml")  # as `chaosfm stream --config`
    assert best.predictor.dgm.fit_steps == 0 and best.compilation_cache is False  # the base, tuned
    # Trial 0 is the base config; its value is the validator's mean CRPS, recomputed here.
    config = read_config(TuneConfig, tmp_path / "tune" / "config.yaml")
    validator = WalkForwardValidator(64, 3, max_folds=2, num_samples=16)
    scores = [s.scores["crps"] for s in validator.backtest(
        lambda: OnlinePredictorForecaster(config.base.predictor, seed=0), tuning_frame(config))]
    assert trials.loc[trials["base"], "value"].item() == pytest.approx(np.mean(scores), rel=1e-9)


def test_tune_refuses_bad_input_with_exit_2(tmp_path, capsys):
    assert main(["tune", "--out", str(tmp_path / "t")]) == 2
    assert "--data is required" in capsys.readouterr().err
    bad = tmp_path / "tune.yaml"
    bad.write_text("data: sp500\nspace: {cusum.slak: {low: 0, high: 1}}\n")
    assert main(["tune", "--config", str(bad), "--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cusum.slak" in err[0] and "slack" in err[0]
    assert main(["tune", "--data", "sp500", "--max-memory", "8", "--out", str(tmp_path / "t")]) == 2
    assert "max_memory" in capsys.readouterr().err and not (tmp_path / "t").exists()


def test_stage_and_pipeline_refuse_bad_input_with_exit_2(tmp_path, capsys):
    assert main(["stage", "rl", "--out", str(tmp_path / "rl")]) == 2
    assert "--in: rl needs the run folder of its parent stage (sft)" in capsys.readouterr().err
    assert main(["stage", "sft", "--in", str(tmp_path / "nowhere"), "--out", str(tmp_path / "sft")]) == 2
    assert "nowhere: no such run folder" in capsys.readouterr().err
    assert main(["stage", "sft", "--steps", "3", "--epochs", "1", "--out", str(tmp_path / "sft")]) == 2
    assert "--epochs: not allowed with argument --steps" in capsys.readouterr().err
    bad = tmp_path / "four.yaml"
    bad.write_text("evaluate: {dataset: sp500}\nsft: {horizn: 3}\n")
    assert main(["pipeline", "--config", str(bad), "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "horizn" in err[0]
    assert not (tmp_path / "p").exists() and not (tmp_path / "sft").exists()


def test_leakage_dates_outside_a_dataset_exit_2(tmp_path, capsys):
    flags = ["leakage", "--data", "ndx", "--cutoff", "2010-12-31", "--fresh-start", "2014-12-31",
             "--out", str(tmp_path / "study")]
    assert main(flags) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ndx" in err[0] and "1990-01-02" in err[0] and "one date per dataset" in err[0]
    assert main(["leakage", "--data", "sp500", "--models", "gpt", "--out", str(tmp_path / "s")]) == 2
    assert "models" in capsys.readouterr().err


@pytest.mark.slow
def test_pretrain_then_mvx(tmp_path, capsys):
    config = tmp_path / "jepa.yaml"
    config.write_text(
        "data: {names: [ndx], cutoff: '1992-12-31'}\n"
        "model: {context_length: 16, d_model: 16, n_layers: 1, d_state: 8, head_dim: 8, d_embed: 8, d_pred: 8,\n"
        "        min_future: 4, max_future: 8, min_span: 2, max_span: 4, cfm_weight: 1.0, cfm_horizon: 3, cfm_steps: 2}\n"
        "train: {steps: 3, batch_size: 4, warmup_steps: 0, checkpoint_every: 3}\n"
        "tokenizer: {kind: fsq, steps: 2, options: {batch_size: 4, window: 32, levels: [4, 4, 3]}}\n"
    )
    assert main(["pretrain", "--config", str(config), "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "jepa_cfm over candle codes (48 in the tokenizer's vocabulary)" in out
    heldout = json.loads((tmp_path / "run" / "metrics.json").read_text())["heldout"]
    # Both checks, each with its verdict: the mean-std collapse flag and every dimension's std.
    assert "VICReg target" in out
    assert f"not collapsed (mean std {heldout['std_mean']:.4g}" in out
    every = f"every dimension above the target (min std {heldout['std_min']:.4g}, {heldout['dims_below_target']} below)"
    assert every + (": yes" if heldout["all_dims_above_target"] else ": no") in out
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta["trained_through"] == {"ndx": "1992-12-31T00:00:00"}
    flags = ["mvx", "--run", str(tmp_path / "run"), "--data", "ndx", "--out", str(tmp_path / "mvx"),
             "--universes", "3", "--num-samples", "4", "--rollout-steps", "2", "--max-windows", "5"]
    assert main(flags) == 0
    scores = pd.read_csv(tmp_path / "mvx" / "scores.csv")
    assert len(scores) == 5 and scores["convergence"].between(0, 1).all() and (scores["bifurcation"] >= 1).all()
    assert json.loads((tmp_path / "mvx" / "metrics.json").read_text())["input"] == "codes"
    assert (tmp_path / "mvx" / "mvx.png").stat().st_size > 1000
    bad = tmp_path / "typo.yaml"
    bad.write_text("data: {names: [ndx]}\nmodel: {d_modle: 16}\n")
    assert main(["pretrain", "--config", str(bad), "--out", str(tmp_path / "bad")]) == 2
    assert "d_modle" in capsys.readouterr().err


# ---- every command: --help, --set, the common flags ----------------------------------------------
CONFIGS = Path(__file__).parents[2] / "configs"

COMMANDS = {"agent", "datasets", "data", "evaluate", "tokenize", "train", "stage", "pipeline", "generate", "forecast",
            "stream", "tune", "multitask", "pretrain", "mvx", "leakage", "demo", "bench", "backtest", "config", "greeks", "inspect",
            "shard"}


def _subcommands(parser):
    """``{name: parser}`` of every (nested) subcommand, e.g. ``"data check"``."""
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[name] = sub
                found.update({f"{name} {inner}": p for inner, p in _subcommands(sub).items()})
    return found


def test_every_command_has_help(capsys):
    commands = _subcommands(build_parser())
    assert {name.split()[0] for name in commands} == COMMANDS
    assert main(["--help"]) == 0
    assert "usage: chaosfm" in capsys.readouterr().out
    for name in commands:
        assert main([*name.split(), "--help"]) == 0, name
        out = capsys.readouterr().out
        assert out.startswith(f"usage: chaosfm {name}"), name


CANONICAL = {"data": "--data", "cutoff": "--cutoff", "seed": "--seed", "out": "--out", "config": "--config",
             "assignments": "--set", "resume": "--resume"}
"""The common flags: config key (argparse dest) -> its one spelling."""

ALIASES: set[tuple[str, str]] = set()
"""Older spellings still accepted beside the canonical one."""

DISTINCT = {"--cutoff-fraction"}
"""Flags named like a common one that set something else."""


def test_the_common_flags_have_one_spelling_and_meaning_everywhere():
    seen = {dest: set() for dest in CANONICAL}
    for name, parser in _subcommands(build_parser()).items():
        options = {}
        for action in parser._actions:
            for flag in action.option_strings:
                options[flag] = action
            if action.dest not in CANONICAL:
                # No other flag is a variant of a common one (--output, --out-dir, --random-seed, ...):
                # a flag named like one is a different setting.
                for flag in action.option_strings:
                    words = flag.lstrip("-").split("-")
                    if any(w.startswith(("out", "seed", "config", "cutoff", "data")) or w == "set" for w in words):
                        assert flag in DISTINCT, (name, flag)
                continue
            canonical = CANONICAL[action.dest]
            assert canonical in action.option_strings, (name, action.option_strings)
            extra = set(action.option_strings) - {canonical}
            assert extra <= {flag for command, flag in ALIASES if command == name}, (name, extra)
            seen[action.dest].add(name)
            if action.dest == "seed":
                assert action.type is int, name
            if action.dest == "config":
                assert action.type is Path, name
            if action.dest == "out":  # a folder, or an fsspec URL kept as text (a Path folds its //)
                assert action.type is location, name
            if action.dest == "assignments":
                assert action.nargs is None and isinstance(action, argparse._AppendAction), name
        # A command that reads a config file takes --set too.
        if "--config" in options:
            assert "--set" in options, name
    # Every command that writes something says where with --out; every command with a config takes --set.
    # (`bench`, `data`, `agent` and `config` are groups: their subcommands take the flags.)
    groups = {"datasets", "data", "bench", "agent", "config", "stage"}
    stages = {f"stage {name}" for name in ("pretrain", "midtrain", "sft", "rl")}
    assert seen["out"] >= (COMMANDS - groups - {"generate"}) | {"bench chaos", "agent train", "agent eval",
                                                                 "config size"} | stages
    assert seen["assignments"] == (COMMANDS - groups - {"data check"}) | {"bench chaos", "agent train", "config size",
                                                                           "tokenize analyze"} | stages
    assert seen["seed"] >= stages | {"evaluate", "tokenize", "train", "pipeline", "generate", "forecast", "stream",
                            "tune", "multitask", "pretrain", "mvx", "leakage"}


class _Stop(Exception):
    """Raised by a stand-in job once it has its config: the command's parsing is what is tested."""


def _capture(monkeypatch, module, name="run"):
    seen = {}

    def job(config, *args, **kwargs):
        seen["config"] = config
        raise _Stop

    monkeypatch.setattr(module, name, job)
    return seen


def _set_cases(tmp_path):
    out = str(tmp_path / "out")
    run = str(tmp_path / "run")
    return [
        ("evaluate", ["evaluate", "--data", "sp500", "--set", "protocol.horizon=7"], lambda c: c.protocol.horizon, 7),
        ("tokenize", ["tokenize", "--data", "sp500", "--set", "steps=5"], lambda c: c.steps, 5),
        ("train", ["train", "--config", str(CONFIGS / "lorenz-gpt.yaml"), "--out", out, "--set", "train.steps=2"],
         lambda c: c.train["steps"], 2),
        ("stage", ["stage", "pretrain", "--config", str(CONFIGS / "gpt-tiny.yaml"), "--out", out,
                   "--set", "train.steps=2"], lambda c: c.train["steps"], 2),
        ("pipeline", ["pipeline", "--config", str(CONFIGS / "four-stage.yaml"), "--out", out,
                      "--set", "sft.train.steps=2"], lambda c: c.sft["train"]["steps"], 2),
        ("pretrain", ["pretrain", "--config", str(CONFIGS / "jepa-tiny.yaml"), "--out", out, "--set", "train.steps=2"],
         lambda c: c.train.steps, 2),
        ("multitask", ["multitask", "--out", out, "--set", "train.steps=2"], lambda c: c.train.steps, 2),
        ("leakage", ["leakage", "--data", "sp500", "--set", "train.steps=2"], lambda c: c.train.steps, 2),
        ("tune", ["tune", "--data", "sp500", "--set", "trials=3"], lambda c: c.trials, 3),
        ("stream", ["stream", "--data", "sp500", "--out", out, "--set", "stream.predictor.cusum.slack=0.25"],
         lambda c: c.stream.predictor.cusum.slack, 0.25),
        ("forecast", ["forecast", "--run", run, "--data", "sp500", "--horizon", "3", "--out", out,
                      "--set", "num_samples=9"], lambda c: c.num_samples, 9),
        ("forecast.generate", ["generate", "--run", run, "--prompt", "1 2", "--set", "n=7"], lambda c: c.n, 7),
        ("mvx", ["mvx", "--run", run, "--data", "sp500", "--out", out, "--set", "universes=3"],
         lambda c: c.universes, 3),
        ("demo", ["demo", "--out", out, "--set", "fast=true"], lambda c: c.fast, True),
    ]


def test_set_reaches_the_config_of_every_command(tmp_path, monkeypatch, capsys):
    import importlib

    for job, argv, read, expected in _set_cases(tmp_path):
        module, _, name = job.partition(".")
        seen = _capture(monkeypatch, importlib.import_module(f"chaosfm.jobs.{module}"), name or "run")
        assert main(argv) == 1, argv  # the stand-in job stopped it: an internal error, not bad input
        assert "_Stop" in capsys.readouterr().err
        assert read(seen["config"]) == expected, argv


def test_set_and_flags_and_files_merge_in_order(tmp_path, monkeypatch, capsys):
    from chaosfm.jobs import evaluate, train

    seen = _capture(monkeypatch, evaluate)
    config = tmp_path / "eval.yaml"
    config.write_text("datasets: [{name: sp500}]\nprotocol: {horizon: 4, num_samples: 10}\n")
    # file < --set < flags
    assert main(["evaluate", "--config", str(config), "--set", "protocol.horizon=7", "--set",
                 "protocol.num_samples=12", "--num-samples", "20", "--set", "cutoff=2010-12-31"]) == 1
    assert seen["config"].protocol.horizon == 7 and seen["config"].protocol.num_samples == 20
    assert seen["config"].cutoff == "2010-12-31"
    seen = _capture(monkeypatch, train)
    assert main(["train", "--config", str(_tiny_train_config(tmp_path / "c.yaml")), "--out", str(tmp_path / "r"),
                 "--set", "train.seed=9", "--seed", "4", "--set", "model.d_model=16"]) == 1
    assert seen["config"].train["seed"] == 4 and seen["config"].model["d_model"] == 16
    capsys.readouterr()


def test_a_bad_set_exits_2_with_one_line_naming_it(tmp_path, capsys):
    config = str(_tiny_train_config(tmp_path / "c.yaml"))
    for value, words in (("train.steps", ["--set", "train.steps", "KEY=VALUE"]),
                         ("train.sted=3", ["train.sted", "steps"]),
                         ("train.steps=[1", ["--set", "train.steps=[1", "YAML"]),
                         ("train.steps=null", ["train.steps=null", "no value"])):
        assert main(["train", "--config", config, "--out", str(tmp_path / "r"), "--set", value]) == 2, value
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and all(word in err[0] for word in words), (value, err)
    assert not (tmp_path / "r").exists()


def test_set_reaches_a_real_evaluation(tmp_path):
    import numpy as np
    import yaml

    close = 100 * np.exp(np.cumsum(0.01 * np.random.default_rng(0).standard_normal(120)))
    data = tmp_path / "market.csv"
    pd.DataFrame({"timestamp": pd.date_range("2020-01-01", periods=120, freq="D").strftime("%Y-%m-%d"),
                  "open": close, "high": close * 1.01, "low": close * 0.99, "close": close,
                  "volume": 1.0}).to_csv(data, index=False)
    out = tmp_path / "eval"
    assert main(["evaluate", "--data", str(data), "--models", "last_value", "--num-samples", "4",
                 "--set", "protocol.horizon=3", "--set", "protocol.step=10", "--set", "protocol.context_length=30",
                 "--set", "protocol.min_context=30", "--set", "title=tiny", "--out", str(out)]) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["protocol"]["horizon"] == 3 and saved["protocol"]["step"] == 10 and saved["title"] == "tiny"
    (entry,) = json.loads((out / "metrics.json").read_text())["datasets"].values()
    assert entry["horizon"] == 3 and entry["models"]["last_value"]["fresh"]["n_windows"] > 0
