"""`chaosfm greeks` (``jobs.greeks``): the written Greeks against Black–Scholes closed forms from
scipy, a two-asset basket that only pays on one asset, the shipped preset, and bad input exits 2
naming the key."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from chaosfm.cli import main
from chaosfm.jobs import greeks

CONFIGS = Path(__file__).parents[2] / "configs"


def black_scholes_digital(spot, strike, vol, rate, maturity):
    d1 = (np.log(spot / strike) + (rate + 0.5 * vol**2) * maturity) / (vol * np.sqrt(maturity))
    d2 = d1 - vol * np.sqrt(maturity)
    discount = np.exp(-rate * maturity)
    return {
        "price": discount * norm.cdf(d2),
        "delta": discount * norm.pdf(d2) / (vol * spot * np.sqrt(maturity)),
        "gamma": -discount * norm.pdf(d2) * d1 / (vol**2 * spot**2 * maturity),
        "vega": -discount * norm.pdf(d2) * d1 / vol,
    }


def test_one_asset_greeks_match_black_scholes_and_are_written(tmp_path, capsys):
    out = tmp_path / "one"
    argv = ["greeks", "--spot", "100", "--strike", "105", "--vol", "0.25", "--rate", "0.02", "--maturity", "0.5",
            "--paths", "400000", "--seed", "3", "--out", str(out)]
    assert main(argv) == 0
    assert "gamma" in capsys.readouterr().out
    frame = pd.read_csv(out / "greeks.csv")
    reference = black_scholes_digital(100.0, 105.0, 0.25, 0.02, 0.5)
    assert list(frame["greek"]) == ["price", "delta", "vega", "gamma"]
    for row in frame.itertuples():
        np.testing.assert_allclose(row.closed_form, reference[row.greek], rtol=1e-9)
        assert 0 < row.standard_error < 0.1 * abs(reference[row.greek]), row
        assert abs(row.value - reference[row.greek]) < 4 * row.standard_error, row
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["paths"] == 400_000 and metrics["max_abs_error_in_se"] < 4
    assert metrics["delta"]["value"][0] == pytest.approx(frame.loc[frame.greek == "delta", "value"].item())
    assert {"config.yaml", "meta.json"} <= {p.name for p in out.iterdir()}


def test_basket_paying_on_one_asset_has_that_assets_greeks(tmp_path):
    # Weights (1, 0): the payoff is the first asset's digital, whatever the second does; correlated
    # draws must leave its Greeks at the one-asset closed form and the second asset's delta at zero.
    config = greeks.read(None, {"spot": "100,80", "weights": "1,0", "strike": 100.0, "vol": "0.2,0.35",
                                "correlation": 0.6, "rate": 0.05, "paths": 400_000, "out": str(tmp_path / "b")})
    metrics = greeks.run(config)
    reference = black_scholes_digital(100.0, 100.0, 0.2, 0.05, 1.0)
    for name in ("delta", "vega"):
        value, error = metrics[name]["value"], metrics[name]["standard_error"]
        assert abs(value[0] - reference[name]) < 4 * error[0], (name, value, reference[name])
        assert abs(value[1]) < 4 * error[1], (name, value)
    gamma, gamma_se = np.asarray(metrics["gamma"]["value"]), np.asarray(metrics["gamma"]["standard_error"])
    assert abs(gamma[0, 0] - reference["gamma"]) < 4 * gamma_se[0, 0]
    assert metrics["closed_form"] is None and metrics["assets"] == 2


def test_the_preset_loads_and_set_reaches_the_config(tmp_path, monkeypatch):
    seen = {}

    def stand_in(config):
        seen["config"] = config
        return {"assets": 3, "paths": config.paths}

    monkeypatch.setattr(greeks, "run", stand_in)
    monkeypatch.setattr(pd, "read_csv", lambda *a, **k: pd.DataFrame({"greek": ["price"]}))
    argv = ["greeks", "--config", str(CONFIGS / "greeks-basket.yaml"), "--out", str(tmp_path), "--set", "paths=1000"]
    assert main(argv) == 0
    config = seen["config"]
    assert config.paths == 1000 and config.spot == [100.0, 90.0, 110.0]
    inputs = greeks.market(config)
    assert inputs["correlation"].shape == (3, 3) and inputs["correlation"][0, 1] == 0.5


@pytest.mark.parametrize(
    "argv, named",
    [
        (["--spot", "100,90", "--strike", "100", "--vol", "0.2", "--correlation", "0.1,0.2"], "correlation"),
        (["--spot", "100,90", "--strike", "100", "--vol", "0.2", "--correlation", "1.5"], "correlation"),
        (["--spot", "100,90", "--strike", "100", "--vol", "0.2,0.3,0.1"], "vol"),
        (["--spot", "100", "--strike", "100", "--vol", "-0.2"], "vol"),
        (["--spot", "100,-5", "--strike", "100", "--vol", "0.2"], "spot"),
        (["--spot", "100", "--strike", "100", "--vol", "0.2", "--weights", "1,1"], "weights"),
        (["--spot", "100", "--strike", "100", "--vol", "0.2", "--paths", "1"], "paths"),
        (["--spot", "abc", "--strike", "100", "--vol", "0.2"], "spot"),
        (["--spot", "100", "--strike", "100", "--vol", "0.2", "--set", "vols=0.3"], "vols"),
    ],
)
def test_bad_input_exits_2_naming_the_key(tmp_path, capsys, argv, named):
    assert main(["greeks", *argv, "--out", str(tmp_path / "bad")]) == 2
    assert named in capsys.readouterr().err
