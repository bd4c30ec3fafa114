"""``chaosfm stage`` (``jobs.stage``): each output loads in the next, lineage in meta.json, refusals before training.

The four runs are the ``chain`` fixture of ``conftest.py`` (shared with ``test_pipeline.py``).
"""

import json
import re
import shutil

import numpy as np
import pytest
import yaml

from chaosfm._artifacts import ArtifactError, sha256
from chaosfm._config import ConfigError
from chaosfm.data import load
from chaosfm.forecasters import TokenForecaster
from chaosfm.jobs import stage as stage_job
from chaosfm.jobs.stage import StageConfig
from chaosfm.train import load_run, tokenizer_sha256


def run_stage(out, **values):
    return stage_job.run(StageConfig(**values, out=out))


@pytest.mark.slow  # the chain of four stage runs: ~20-30 s, shared by the tests marked so
def test_each_stage_loads_in_the_next_with_its_lineage(chain):
    runs, results = chain
    names = list(runs)
    tokenizer = tokenizer_sha256(runs["pretrain"] / "tokenizer")
    for previous, name in zip([None, *names], names):
        model, meta = load_run(runs[name])  # every hash checks out
        assert meta["stage"] == name and meta["tokenizer_sha256"] == tokenizer
        assert TokenForecaster(runs[name]).model.config.vocab_size == 34
        assert results[name] == json.loads((runs[name] / "metrics.json").read_text())  # run returns metrics.json
        if previous is None:
            assert meta["parent"] is None
        else:
            assert meta["parent"]["stage"] == previous
            assert meta["parent"]["model_sha256"] == sha256(runs[previous] / "model.eqx")
    # midtrain's default learning rate is 0.1x pretrain's; sft 0.5x midtrain's.
    lr = {n: json.loads((runs[n] / "log.jsonl").read_text().splitlines()[0])["lr"] for n in names}
    config = {n: runs[n] / "config.yaml" for n in names}
    peak = {n: yaml.safe_load(config[n].read_text())["train"]["learning_rate"] for n in names}
    assert peak["midtrain"] == pytest.approx(0.001) and peak["sft"] == pytest.approx(0.0005)
    assert all(np.isfinite(v) for v in lr.values())


@pytest.mark.slow  # the chain of four stage runs: ~20-30 s, shared by the tests marked so
def test_trained_through_is_the_union_over_ancestors(chain):
    runs, _ = chain
    frame = load("lorenz63", length=1000)
    cutoff = frame["timestamp"].iloc[int(1000 * 0.8) - 1]
    for name in runs:
        meta = json.loads((runs[name] / "meta.json").read_text())
        assert meta["trained_through"] == {"lorenz63": cutoff}
        assert meta["stage_trained_through"] == {"lorenz63": cutoff}


@pytest.mark.slow  # the chain of four stage runs: ~20-30 s, shared by the tests marked so
def test_stages_log_a_held_out_loss_and_draw_it(chain):
    runs, results = chain
    for name in runs:
        assert (runs[name] / "loss.png").read_bytes().startswith(b"\x89PNG")
        logged = [json.loads(line) for line in (runs[name] / "log.jsonl").read_text().splitlines()]
        held = [r["val_loss"] for r in logged if "val_loss" in r]
        if name == "rl":  # read by its reward curve: its surrogate loss has no held-out reading
            assert held == [] and results[name]["final_val_loss"] is None
        else:
            assert held and all(np.isfinite(held)) and results[name]["final_val_loss"] == held[-1]


@pytest.mark.slow  # the chain of four stage runs: ~20-30 s, shared by the tests marked so
def test_rl_logs_its_reward_curve(chain):
    runs, results = chain
    entries = [json.loads(line) for line in (runs["rl"] / "log.jsonl").read_text().splitlines()]
    rewards = [e["reward_mean"] for e in entries if "reward_mean" in e]
    assert len(rewards) == 4 and all(0.0 <= r <= 1.0 for r in rewards)
    kl = [e["kl"] for e in entries if "kl" in e]
    # The policy starts as the SFT model: the first step's exact KL is 0; it grows as the policy moves.
    assert kl[0] == pytest.approx(0.0, abs=1e-6) and all(k >= 0 for k in kl) and kl[-1] > 0
    assert (runs["rl"] / "reward_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert results["rl"]["reward"]["last"] == rewards[-1] and results["rl"]["reward"]["plot"] == "reward_curve.png"


@pytest.mark.slow  # uses the chain
@pytest.mark.parametrize(
    "stage, parent, message",
    [
        ("rl", "pretrain", "rl needs a sft run; this is a pretrain run"),
        ("rl", "midtrain", "rl needs a sft run; this is a midtrain run"),
        ("midtrain", "sft", "midtrain needs a pretrain run; this is a sft run"),
        ("sft", "rl", "sft needs a midtrain run or a pretrain run; this is a rl run"),
    ],
)
def test_a_parent_of_the_wrong_kind_is_refused_before_training(chain, tmp_path, stage, parent, message):
    runs, _ = chain
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match=message):
        run_stage(out, stage=stage, parent=str(runs[parent]), train={"steps": 1})
    assert not out.exists()


@pytest.mark.slow  # the chain of four stage runs: ~20-30 s, shared by the tests marked so
def test_tokenizer_and_data_mismatches_are_refused_before_training(chain, tmp_path):
    import jax
    import pandas as pd

    from chaosfm.tokenizers import BinConfig, BinTokenizer

    runs, _ = chain
    frame = load("lorenz63", length=1000)
    other = BinTokenizer(BinConfig(vocab_size=34, kind="uniform"))
    other.fit(frame.iloc[:300], key=jax.random.key(0))
    other.save(tmp_path / "other")
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="tokenizer.path: .* is not the tokenizer of the parent"):
        run_stage(out, stage="sft", parent=str(runs["midtrain"]), tokenizer={"path": str(tmp_path / "other")})
    with pytest.raises(ConfigError, match=r"lacks column\(s\) \['x0', 'x1', 'x2'\]"):
        run_stage(out, stage="midtrain", parent=str(runs["pretrain"]), data={"names": ["sp500"]})
    two = tmp_path / "two.csv"
    pd.concat([frame.assign(asset="a"), frame.assign(asset="b")]).to_csv(two, index=False)
    with pytest.raises(ConfigError, match="midtrain trains on one asset; .* holds 2 \\(a, b\\)"):
        run_stage(out, stage="midtrain", parent=str(runs["pretrain"]), data={"names": [str(two)]})
    with pytest.raises(ConfigError, match="is the parent run itself"):
        run_stage(runs["sft"], stage="rl", parent=str(runs["sft"]))
    with pytest.raises(ConfigError, match="train.tbptt_segments: sft reads whole windows"):
        run_stage(out, stage="sft", parent=str(runs["midtrain"]), train={"tbptt_segments": 2})
    with pytest.raises(ConfigError, match="samples: the batch-mean baseline"):
        run_stage(out, stage="rl", parent=str(runs["sft"]), samples=1, train={"batch_size": 1})
    assert not out.exists()


@pytest.mark.slow  # the chain of four stage runs: ~20-30 s, shared by the tests marked so
def test_a_damaged_or_missing_parent_is_named(chain, tmp_path):
    runs, _ = chain
    damaged = tmp_path / "damaged"
    shutil.copytree(runs["sft"], damaged)
    (damaged / "model.eqx").write_bytes(b"not weights")
    with pytest.raises(ArtifactError, match="model.eqx: damaged"):
        run_stage(tmp_path / "out", stage="rl", parent=str(damaged))
    with pytest.raises(ArtifactError, match="no such run folder"):
        run_stage(tmp_path / "out", stage="rl", parent=str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="--in: sft needs"):
        run_stage(tmp_path / "out", stage="sft")
    with pytest.raises(ConfigError, match="reward: return_mse decodes returns with a candle tokenizer"):
        run_stage(tmp_path / "out", stage="rl", parent=str(runs["sft"]), reward="return_mse")
    assert not (tmp_path / "out").exists()


def test_a_stage_without_out_writes_a_new_folder_named_after_it():
    assert re.fullmatch(r"runs/stage-sft-\d{8}-\d{6}", StageConfig(stage="sft", parent="x").out.as_posix())


def test_read_stage_flags_over_file_and_typos(tmp_path):
    file = tmp_path / "stage.yaml"
    file.write_text("stage: sft\nhorizon: 3\ntrain: {steps: 9}\n")
    config = stage_job.read(file, {"train.learning_rate": 0.01, "horizon": 4, "parent": "x", "out": str(tmp_path)})
    assert config.horizon == 4 and config.train == {"steps": 9, "learning_rate": 0.01} and config.parent == "x"
    assert config.out == tmp_path and not config.resume
    flags = stage_job.read(None, {"stage": "rl", "train.steps": 30, "data.names": ["sp500"], "reward": None})
    assert flags.train == {"steps": 30} and flags.data.names == ["sp500"] and flags.reward == "token_accuracy"
    with pytest.raises(ConfigError, match="horizn"):
        stage_job.read(None, {"stage": "sft", "horizn": 3})
