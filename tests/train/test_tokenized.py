"""`chaosfm train --config`: config checks before training, the fence on the tokenizer, the run folder."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from chaosfm._config import ConfigError
from chaosfm.data import load
from chaosfm.train import load_run, parse_train_run_file, read_train_run_file, run_train_tokenized
from chaosfm.tokenizers import load_tokenizer

CONFIGS = Path(__file__).parents[2] / "configs"


def lorenz_config(**model) -> dict:
    return {
        "data": {"names": "lorenz63", "options": {"length": 1200}, "embargo": 10},
        "tokenizer": {"kind": "bins", "options": {"vocab_size": 34, "kind": "quantile"}},
        "model": {"kind": "gpt", "context_length": 24, "d_model": 32, "n_layers": 1, **model},
        "train": {"steps": 6, "batch_size": 4, "warmup_steps": 1, "checkpoint_every": 3, "log_every": 1},
    }


@pytest.mark.parametrize(
    "change, key",
    [
        (lambda c: c["data"].update(nmes=["x"]), "data.nmes"),
        (lambda c: c.update(extra={}), "extra"),
        (lambda c: c["train"].update(steps="many"), "train.steps"),
        (lambda c: c["model"].update(d_modle=3), "model.d_modle"),
        (lambda c: c["tokenizer"].update(options={"vocab_sise": 9}), "tokenizer.options"),
        (lambda c: c["tokenizer"].update(path="somewhere"), "tokenizer"),
    ],
)
def test_bad_keys_and_types_name_the_key(change, key):
    config = lorenz_config()
    change(config)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        parse_train_run_file(config)


def test_vocab_mismatch_and_long_context_fail_before_training(tmp_path):
    config = parse_train_run_file(lorenz_config(vocab_size=99))
    with pytest.raises(ConfigError, match="model.vocab_size"):
        run_train_tokenized(config, tmp_path / "a")
    config = parse_train_run_file(lorenz_config(context_length=5000))
    with pytest.raises(ConfigError, match="model.context_length"):
        run_train_tokenized(config, tmp_path / "b")
    assert not (tmp_path / "a" / "model.eqx").exists() and not (tmp_path / "b").exists()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("tokenized") / "run"
    return out, run_train_tokenized(parse_train_run_file(lorenz_config()), out)


def test_run_folder_fence_and_metrics(trained):
    out, result = trained
    metrics = json.loads((out / "metrics.json").read_text())
    heldout = metrics["heldout"]
    for name in ("perplexity", "accuracy", "top5_accuracy", "unigram_perplexity"):
        assert np.isfinite(heldout[name])
    assert result.metrics == metrics
    # The tokenizer saw only rows at or before the cutoff (80% of 1200 rows at dt 0.02).
    frame = load("lorenz63", length=1200)
    cutoff = frame["timestamp"].iloc[int(1200 * 0.8) - 1]
    tokenizer = load_tokenizer(out / "tokenizer")
    assert tokenizer.trained_through == {"lorenz63": cutoff}
    model, meta = load_run(out)  # hashes of every file, the tokenizer's included, check out
    assert meta["trained_through"] == {"lorenz63": cutoff}
    assert meta["upstream_trained_through"] == {"lorenz63": cutoff}
    assert "tokenizer/tokenizer.json" in meta["files"]
    # Train codes end at the cutoff; held-out codes start after the embargo: 3 codes per row.
    assert metrics["codes"] == {"train": 960 * 3, "valid": (1200 - 960 - 10) * 3}
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert set(saved) == {"data", "tokenizer", "model", "train"} and saved["model"]["vocab_size"] == 34


def test_resume_refuses_changed_data(trained):
    out, _ = trained
    changed = lorenz_config()
    changed["data"]["embargo"] = 20
    with pytest.raises(ConfigError, match="data"):
        run_train_tokenized(parse_train_run_file(changed), out, resume=True)


@pytest.mark.parametrize("name", ["gpt-tiny", "mamba-tiny", "lorenz-gpt", "lorenz-mamba"])
def test_presets_parse(name):
    read_train_run_file(CONFIGS / f"{name}.yaml")
