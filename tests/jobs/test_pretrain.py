"""``chaosfm pretrain`` on the shipped configs: the KAN predictor with Barlow Twins and the
cross-resolution term, end to end from the command line to a run folder that loads back."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from chaosfm.cli import main
from chaosfm.models import KANLayer, StepwisePredictor
from chaosfm.data import load
from chaosfm.train import feature_set, load_pretrained

CONFIGS = Path(__file__).parents[2] / "configs"


@pytest.mark.slow  # ~25 s of CPU, about a minute on a busy 2-core machine
def test_jepa_kan_tiny_trains_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "run"
    # Also the indicator feature set (RSI and Bollinger width beside the close-only features).
    assert main(["pretrain", "--config", str(CONFIGS / "jepa-kan-tiny.yaml"), "--out", str(out),
                 "--set", "data.features=close+indicators"]) == 0
    assert f"wrote the run to {out}" in capsys.readouterr().out
    shipped = yaml.safe_load((CONFIGS / "jepa-kan-tiny.yaml").read_text())["model"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 60
    final = metrics["final"]
    # Both extra terms were on and were logged beside VICReg's, and the loss adds them up.
    assert {"barlow", "cross_resolution", "invariance", "variance", "covariance"} <= set(final)
    assert all(np.isfinite(final[k]) for k in ("barlow", "cross_resolution", "loss"))
    assert final["loss"] == pytest.approx(
        25.0 * final["invariance"] + 25.0 * final["variance"] + 1.0 * final["covariance"]
        + shipped["barlow_weight"] * final["barlow"] + shipped["cross_resolution_weight"] * final["cross_resolution"],
        rel=1e-4,
    )
    assert metrics["heldout"]["windows"] > 0 and not metrics["heldout"]["collapsed"]
    # The held-out loss on the last tenth of the training rows, every 6 of the 60 steps, and its plot.
    logged = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "val_loss" in r] == list(range(6, 61, 6))
    assert np.isfinite(final["val_loss"]) and (out / "loss.png").read_bytes().startswith(b"\x89PNG")
    model, inputs, meta = load_pretrained(out)
    assert tuple(inputs.features) == feature_set(load("sp500"), "close+indicators")
    assert {"rsi_14", "bb_width_20_2"} <= set(inputs.features)
    assert model.config.predictor == "kan" and model.config.barlow_weight == shipped["barlow_weight"]
    assert isinstance(model.predictor, StepwisePredictor)
    assert all(isinstance(block, KANLayer) and block.basis == "bspline" for block in model.predictor.blocks)
    assert model.predictor.w_in.shape == (shipped["d_embed"], shipped["d_pred"])
    assert "sp500" in meta["trained_through"]


@pytest.mark.slow  # ~30 s on a busy 2-core machine
def test_jepa_mamba3_trains_on_a_market_clock_from_the_command_line(tmp_path, capsys):
    from chaosfm.data import session_clock
    from chaosfm.models import Mamba2Mixer
    from chaosfm.models._gpt import Block

    out = tmp_path / "run"
    assert main(["pretrain", "--config", str(CONFIGS / "jepa-mamba3.yaml"), "--out", str(out),
                 "--set", "train.steps=4", "--set", "train.log_every=2", "--set", "train.checkpoint_every=4"]) == 0
    assert f"wrote the run to {out}" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 4 and np.isfinite(metrics["final"]["loss"])
    model, inputs, _ = load_pretrained(out)
    config = model.config
    # The shipped options, and what the job measured: daily bars, one trading day per bar.
    assert config.trapezoidal and config.complex_phase and config.bc_norm and config.exo_clock
    assert config.session == "weekdays" and config.clock_unit == 86_400.0
    assert config.exo_column == list(inputs.features).index("realized_vol")
    assert [type(layer) for layer in model.encoder.layers] == [Mamba2Mixer, Mamba2Mixer, Block]
    # Every stream ends in the session clock of its rows: 1 for most bars, 2 or more after a holiday.
    frame = load("sp500")
    stream = inputs.streams(frame)["sp500"]
    assert stream.inputs.shape[1] == len(inputs.features) + 1
    np.testing.assert_array_equal(stream.inputs[:, -1], session_clock(stream.stamps, "weekdays", 86_400.0))
    assert np.mean(stream.inputs[:, -1] == 1.0) > 0.9 and stream.inputs[:, -1].max() >= 2.0
