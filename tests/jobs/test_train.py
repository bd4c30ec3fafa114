"""`chaosfm train --config` (``jobs.train``): config checks before training, the fence on the tokenizer, the run folder."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from chaosfm._config import ConfigError
from chaosfm.data import load
from chaosfm.jobs import train as train_job
from chaosfm.jobs.train import parse_train_run_file
from chaosfm.tokenizers import load_tokenizer
from chaosfm.train import load_run

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
        (lambda c: c["tokenizer"].update(seed=5), "tokenizer.seed"),  # the run has one seed: train.seed (0)
        (lambda c: c.update(out=["a"]), "out"),
    ],
)
def test_bad_keys_and_types_name_the_key(change, key):
    config = lorenz_config()
    change(config)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        parse_train_run_file(config)


def test_the_tokenizer_seed_may_repeat_the_runs_seed():
    config = lorenz_config()
    config["tokenizer"]["seed"] = 4
    config["train"]["seed"] = 4
    assert parse_train_run_file(config).seed == 4


def test_vocab_mismatch_and_long_context_fail_before_training(tmp_path):
    config = parse_train_run_file({**lorenz_config(vocab_size=99), "out": str(tmp_path / "a")})
    with pytest.raises(ConfigError, match="model.vocab_size"):
        train_job.run(config)
    config = parse_train_run_file({**lorenz_config(context_length=5000), "out": str(tmp_path / "b")})
    with pytest.raises(ConfigError, match="model.context_length"):
        train_job.run(config)
    assert not (tmp_path / "a" / "model.eqx").exists() and not (tmp_path / "b").exists()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("tokenized") / "run"
    return out, train_job.run(parse_train_run_file({**lorenz_config(), "out": str(out)}))


def test_run_folder_fence_and_metrics(trained):
    out, returned = trained
    metrics = json.loads((out / "metrics.json").read_text())
    heldout = metrics["heldout"]
    for name in ("perplexity", "accuracy", "top5_accuracy", "unigram_perplexity"):
        assert np.isfinite(heldout[name])
    assert returned == metrics
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
        train_job.run(parse_train_run_file({**changed, "out": str(out), "resume": True}))


@pytest.mark.parametrize("name", ["gpt-tiny", "mamba-tiny", "lorenz-gpt", "lorenz-mamba", "gpt-indices"])
def test_presets_parse(name):
    config = train_job.read(CONFIGS / f"{name}.yaml")
    assert re.fullmatch(r"runs/train-\d{8}-\d{6}", config.out.as_posix()) and not config.resume  # the default folder


def test_flags_override_the_file_and_typos_name_the_key(tmp_path):
    file = tmp_path / "run.yaml"
    file.write_text(yaml.safe_dump(lorenz_config()))
    config = train_job.read(file, {"train.seed": 7, "data.names": "lorenz63,rossler", "out": str(tmp_path / "o"),
                                   "train.steps": None})
    assert config.seed == 7 and config.data.names == ["lorenz63", "rossler"] and config.train["steps"] == 6
    assert config.out == tmp_path / "o"
    with pytest.raises(ConfigError, match=r"train\.stpes"):
        train_job.read(file, {"train.stpes": 3})


def test_the_held_out_loss_is_logged_and_drawn(trained):
    import matplotlib.image

    out, returned = trained
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    # 6 steps: eval_every unset is a tenth of the steps, at least 1, so every step has one.
    held = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in held] == [1, 2, 3, 4, 5, 6] and all(np.isfinite(r["val_loss"]) for r in held)
    assert returned["final_val_loss"] == held[-1]["val_loss"]
    image = matplotlib.image.imread(out / "loss.png")
    assert image.ndim == 3 and min(image.shape[:2]) > 100
