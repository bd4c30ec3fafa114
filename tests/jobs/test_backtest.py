"""``chaosfm backtest`` in-process: an evaluation's forecasts traded into a run folder, and every
kind of bad input refused before anything is written."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from chaosfm._config import ConfigError
from chaosfm.jobs import backtest, evaluate

STATISTICS = {"sharpe", "sharpe_se", "sharpe_ci", "psr", "dsr", "pbo", "turnover", "max_drawdown", "total_return",
              "annual_return", "costs", "days", "by_class", "assets"}


def write_market(path, n=160, shift=0.0):
    """Two assets on one business-day calendar, in one CSV."""
    rng = np.random.default_rng(0)
    days = pd.bdate_range("2020-01-01", periods=n).strftime("%Y-%m-%d")
    parts = []
    for k, asset in enumerate(("aaa", "bbb")):
        close = (100 + 50 * k) * np.exp(np.cumsum(0.01 * rng.standard_normal(n))) + shift
        parts.append(pd.DataFrame({"asset": asset, "timestamp": days, "open": close, "high": close * 1.01,
                                   "low": close * 0.99, "close": close, "volume": 1.0}))
    pd.concat(parts).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory):
    root = tmp_path_factory.mktemp("backtest")
    data = write_market(root / "market.csv")
    config = evaluate.read(None, {
        "datasets": [{"name": str(data)}], "models": ["random_walk", "ar"],
        "protocol": {"horizon": 3, "num_samples": 20, "context_length": 40, "min_context": 30, "step": 3,
                     "embargo": 2},
        "out": str(root / "eval"),
    })
    evaluate.run(config)
    return root / "eval", data


def test_backtest_writes_its_run_folder(evaluation, tmp_path):
    folder, data = evaluation
    out = tmp_path / "bt"
    config = backtest.read(None, {"run": str(folder), "rules": "sign_median,kelly,vol_target,long_short",
                                  "models": "ar", "cost_bps": 5.0, "impact": 0.1, "rolling_window": 10,
                                  "out": str(out)})
    metrics = backtest.run(config)
    assert {p.name for p in out.iterdir()} >= {"metrics.json", "pnl.parquet", "report.html", "config.yaml",
                                               "meta.json"}
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert metrics["n_trials"] == 4 and metrics["holding"] == 3
    assert 0.0 <= metrics["pbo"]["value"] <= 1.0
    for name, entry in metrics["strategies"].items():
        assert STATISTICS <= set(entry), name
        assert entry["sharpe_ci"][0] < entry["sharpe"] < entry["sharpe_ci"][1]
        assert set(entry["by_class"]) == {"in_sample", "within_pretrain", "fresh"}
        assert entry["by_class"]["fresh"]["days"] > 0 and entry["by_class"]["in_sample"]["days"] > 0
        assert set(entry["assets"]) == {"aaa", "bbb"}
    pnl = pd.read_parquet(out / "pnl.parquet")
    assert pd.api.types.is_datetime64_any_dtype(pnl["timestamp"])
    assert set(pnl["strategy"]) == set(metrics["strategies"]) and "ar/long_short" in set(pnl["strategy"])
    np.testing.assert_allclose(pnl["net"], pnl["gross"] - pnl["cost"])
    # Impact is quadratic in each asset's trade; the book pays the sum of its assets' costs.
    assets = pnl[pnl["asset"] != "portfolio"]
    np.testing.assert_allclose(assets["cost"], 5e-4 * assets["turnover"] + 0.1 * assets["turnover"] ** 2)
    summed = assets.groupby(["strategy", "timestamp"])["cost"].sum()
    book = pnl[pnl["asset"] == "portfolio"].set_index(["strategy", "timestamp"])["cost"]
    np.testing.assert_allclose(book.loc[summed.index], summed)
    # A held row earns its position times the data's own close-to-close return.
    prices = pd.read_csv(data, parse_dates=["timestamp"])
    aaa = prices[prices["asset"] == "aaa"].set_index("timestamp")["close"]
    rows = pnl[(pnl["strategy"] == "ar/sign_median") & (pnl["asset"] == "aaa") & (pnl["position"] != 0)]
    np.testing.assert_allclose(rows["gross"], rows["position"] * aaa.pct_change().loc[rows["timestamp"]].to_numpy())
    meta = json.loads((out / "meta.json").read_text())
    assert {"pnl.parquet", "report.html", "metrics.json"} <= set(meta["files"])
    assert meta["evaluation"] == str(folder)
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["run"] == str(folder) and saved["rules"] == ["sign_median", "kelly", "vol_target", "long_short"]
    html = (out / "report.html").read_text()
    assert "<h2>Backtest</h2>" in html and "<h3>ar/long_short</h3>" in html
    with pytest.raises(ConfigError, match="already holds files"):  # never over an existing run
        backtest.run(config)


def test_bad_input_is_refused_naming_the_file_key_or_value(evaluation, tmp_path):
    folder, _ = evaluation
    out = tmp_path / "bt"

    def attempt(**values):
        return backtest.run(backtest.read(None, {"run": str(folder), "out": str(out), **values}))

    with pytest.raises(ConfigError, match="unknown rule.*'magic'.*known rules: sign_median, kelly, vol_target, "
                                          "long_short"):
        attempt(rules="sign_median,magic")
    with pytest.raises(ConfigError, match=r"models: \['garch'\] are not in .*forecasts.parquet; it holds "
                                          "random_walk, ar"):
        attempt(models="garch")
    with pytest.raises(ConfigError, match="holding: 4 exceeds the horizon 3"):
        attempt(holding=4)
    with pytest.raises(ConfigError, match="unknown key 'rulez'"):
        attempt(rulez="kelly")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match=f"{empty}/forecasts.parquet does not exist"):
        attempt(run=str(empty))
    assert not out.exists()


def test_data_changed_since_the_evaluation_is_refused(evaluation, tmp_path):
    folder, data = evaluation
    copy = tmp_path / "eval"
    copy.mkdir()
    changed = write_market(tmp_path / "market.csv", shift=1.0)
    settings = yaml.safe_load((folder / "config.yaml").read_text())
    settings["datasets"][0]["name"] = str(changed)
    (copy / "config.yaml").write_text(yaml.safe_dump(settings))
    (copy / "forecasts.parquet").write_bytes((folder / "forecasts.parquet").read_bytes())
    config = backtest.read(None, {"run": str(copy), "out": str(tmp_path / "bt")})
    with pytest.raises(ConfigError, match="forecasts.parquet: .*the data changed since the evaluation"):
        backtest.run(config)


def test_an_evaluation_mixing_markets_and_trajectories_trades_its_markets(tmp_path):
    # The demo's evaluation (sp500 beside lorenz63) writes one forecasts-NAME.parquet per dataset;
    # the backtest trades the market's and never loads the trajectory.
    market = write_market(tmp_path / "market.csv")
    trajectory = tmp_path / "walk.csv"
    pd.DataFrame({"timestamp": np.arange(120.0), "x0": np.cumsum(np.random.default_rng(1).standard_normal(120))}
                 ).to_csv(trajectory, index=False)
    protocol = {"horizon": 3, "num_samples": 20, "context_length": 40, "min_context": 30, "step": 3, "embargo": 2}
    evaluate.run(evaluate.read(None, {
        "datasets": [{"name": str(market), "models": ["random_walk"]}, {"name": str(trajectory), "models": ["last_value"]}],
        "protocol": protocol, "out": str(tmp_path / "eval"),
    }))
    assert {p.name for p in (tmp_path / "eval").glob("forecasts-*.parquet")} == {"forecasts-market.parquet",
                                                                                 "forecasts-walk.parquet"}
    trajectory.unlink()  # loading it would now fail: the backtest must not need it
    metrics = backtest.run(backtest.read(None, {"run": str(tmp_path / "eval"), "out": str(tmp_path / "bt")}))
    assert set(metrics["strategies"]) == {"random_walk/sign_median"}
    assert STATISTICS <= set(metrics["strategies"]["random_walk/sign_median"])
    assert (tmp_path / "bt" / "report.html").is_file()
