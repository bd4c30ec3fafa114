"""``chaosfm leakage --seed N``: the study's one seed reaches every artifact, and fixes the results."""

import json

import pytest
import yaml

from chaosfm.cli import main
from chaosfm.data import load

TINY_MODEL = dict(context_length=16, d_model=16, n_layers=1, d_state=8, head_dim=8, d_embed=8, d_pred=8,
                  min_future=4, max_future=8, min_span=2, max_span=4, cfm_horizon=3, cfm_steps=2)
TINY_TRAIN = dict(steps=3, batch_size=4, warmup_steps=0, checkpoint_every=3, log_every=1)


@pytest.mark.slow
def test_one_seed_reaches_every_artifact_and_two_runs_write_the_same_metrics(tmp_path):
    frame = load("sp500")
    part = frame[(frame["timestamp"] >= "2004-01-01") & (frame["timestamp"] <= "2007-12-31")]
    data = tmp_path / "sp500_slice.csv"
    part.drop(columns="asset").to_csv(data, index=False)
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump({
        "data": [str(data)], "pretrain_cutoff": "2005-12-30", "fresh_start": "2006-12-29", "models": ["jepa_cfm"],
        "model": TINY_MODEL, "train": TINY_TRAIN, "horizon": 3, "num_samples": 8, "max_windows": 20,
        "n_bootstrap": 100,
    }))
    outs = [tmp_path / "first", tmp_path / "second"]
    for out in outs:
        code = main(["leakage", "--config", str(config), "--seed", "3", "--tokenizer", "fsq", "--tokenizer-steps", "5",
                     "--out", str(out)])
        assert code == 0

    metas = sorted(outs[0].rglob("meta.json"))
    folders = {meta.parent.relative_to(outs[0]).as_posix() for meta in metas}
    # The study, both encoders and both protocols' tokenizers.
    assert {".", "runs/jepa_cfm-leaky", "runs/jepa_cfm-fenced", "tokenizers/leaky", "tokenizers/fenced"} <= folders
    for meta in metas:
        assert json.loads(meta.read_text())["seed"] == 3, meta
    for run in ("jepa_cfm-leaky", "jepa_cfm-fenced"):
        saved = yaml.safe_load((outs[0] / "runs" / run / "config.yaml").read_text())
        assert saved["train"]["seed"] == 3
    assert (outs[0] / "metrics.json").read_bytes() == (outs[1] / "metrics.json").read_bytes()
