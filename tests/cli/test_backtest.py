"""``chaosfm evaluate`` on a built-in market, then ``chaosfm backtest`` on its folder: the files, the
statistics, the flags reaching the config, and one-line errors for bad input."""

import json

import pandas as pd
import pytest
import yaml

from chaosfm.cli import main


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli-backtest") / "eval"
    assert main(["evaluate", "--data", "sp500", "--models", "random_walk,garch", "--max-windows", "30",
                 "--num-samples", "20", "--out", str(out)]) == 0
    return out


@pytest.mark.slow  # an evaluation of sp500, then a backtest with its tearsheet: ~12 s of CPU, more on a busy machine
def test_evaluate_then_backtest_writes_the_files_and_the_statistics(evaluated, tmp_path, capsys):
    out = tmp_path / "bt"
    assert main(["backtest", "--run", str(evaluated), "--rule", "sign_median,vol_target", "--holding", "3",
                 "--cost-bps", "2", "--impact", "0.5", "--set", "rolling_window=10", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "4 strategies" in printed and "garch/vol_target" in printed and "fresh sharpe" in printed
    assert {p.name for p in out.iterdir()} >= {"metrics.json", "pnl.parquet", "report.html", "config.yaml",
                                               "meta.json"}
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert (config["holding"], config["cost_bps"], config["impact"], config["rolling_window"]) == (3, 2.0, 0.5, 10)
    assert config["rules"] == ["sign_median", "vol_target"] and config["run"] == str(evaluated)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["holding"] == 3 and metrics["n_trials"] == 4
    for entry in metrics["strategies"].values():
        assert isinstance(entry["sharpe"], float) and isinstance(entry["sharpe_se"], float)
        assert 0 <= entry["psr"] <= 1 and 0 <= entry["dsr"] <= 1 and entry["max_drawdown"] <= 0
        assert entry["by_class"]["fresh"]["days"] > 0 and entry["by_class"]["fresh"]["sharpe"] is not None
    assert metrics["pbo"]["value"] is not None
    pnl = pd.read_parquet(out / "pnl.parquet")
    assert pd.api.types.is_datetime64_any_dtype(pnl["timestamp"])
    # Three rows held from each of the 30 origins (they are far apart: no hold overlaps another).
    one = pnl[(pnl["strategy"] == "garch/sign_median") & (pnl["asset"] == "sp500")]
    assert len(one) == 3 * 30 and (one["position"].abs() == 1).all()


@pytest.mark.parametrize("argv, words", [
    (["--rule", "sign_median,oracle"], ["unknown rule", "'oracle'", "known rules: sign_median, kelly"]),
    (["--models", "ar"], ["models: ['ar'] are not in", "forecasts.parquet", "random_walk, garch"]),
    (["--holding", "6"], ["holding: 6 exceeds the horizon 5"]),
    (["--cost-bps", "-1"], ["cost_bps", "greater than or equal to 0"]),
])
def test_bad_input_exits_2_with_one_line_naming_it(evaluated, tmp_path, capsys, argv, words):
    assert main(["backtest", "--run", str(evaluated), *argv, "--out", str(tmp_path / "bt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and all(word in err[0] for word in words), err
    assert not (tmp_path / "bt").exists()


def test_a_folder_without_forecasts_and_a_missing_run_flag_exit_2(tmp_path, capsys):
    assert main(["backtest", "--run", str(tmp_path), "--out", str(tmp_path / "bt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{tmp_path}/forecasts.parquet does not exist" in err[0], err
    assert main(["backtest"]) == 2
    assert "--run EVAL_DIR is required" in capsys.readouterr().err
