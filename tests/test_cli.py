"""The command line: exit codes, one-line errors, and the demo end to end."""

import json

import pandas as pd
import pytest

from chaosfm.cli import main


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
    assert len(table) == 4 * 3 and {"q0.1", "q0.5", "q0.9", "mean"} <= set(table.columns)
    assert (table["q0.1"] <= table["q0.9"]).all()

    evaluated = tmp_path / "eval"
    assert main(["evaluate", "--data", str(data), "--run", str(run), "--models", "last_value",
                 "--horizon", "5", "--num-samples", "4", "--step", "100", "--context-length", "60",
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
