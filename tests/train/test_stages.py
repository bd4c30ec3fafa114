"""The four stages: each output loads in the next, lineage in meta.json, refusals before training, the table."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from chaosfm._artifacts import ArtifactError, sha256
from chaosfm._config import ConfigError
from chaosfm.data import load
from chaosfm.evaluate import Protocol, TokenForecaster
from chaosfm.train import StageConfig, load_run, read_stage, run_stage, tokenizer_sha256

CONFIGS = Path(__file__).parents[2] / "configs"
LORENZ = {"names": ["lorenz63"], "options": {"length": 1000}, "embargo": 10}
LOOP = {"batch_size": 4, "warmup_steps": 1, "checkpoint_every": 50, "log_every": 1}


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """pretrain (fits bins + a GPT) -> midtrain -> sft -> rl, a few steps each."""
    root = tmp_path_factory.mktemp("stages")
    runs = {name: root / name for name in ("pretrain", "midtrain", "sft", "rl")}
    run_stage(
        StageConfig(
            stage="pretrain", data=LORENZ,
            tokenizer={"kind": "bins", "options": {"vocab_size": 34, "kind": "quantile"}},
            model={"kind": "gpt", "context_length": 24, "d_model": 32, "n_layers": 1},
            train={"steps": 5, "learning_rate": 0.01, **LOOP},
        ),
        runs["pretrain"],
    )
    run_stage(StageConfig(stage="midtrain", parent=str(runs["pretrain"]), train={"steps": 3}), runs["midtrain"])
    run_stage(StageConfig(stage="sft", parent=str(runs["midtrain"]), horizon=6, train={"steps": 3}), runs["sft"])
    results = {
        "rl": run_stage(
            StageConfig(stage="rl", parent=str(runs["sft"]), horizon=6, samples=4, kl_coef=0.1, train={"steps": 4}),
            runs["rl"],
        )
    }
    return runs, results


@pytest.mark.slow  # the chain of four stage runs: ~20-30 s, shared by the tests marked so
def test_each_stage_loads_in_the_next_with_its_lineage(chain):
    runs, _ = chain
    names = list(runs)
    tokenizer = tokenizer_sha256(runs["pretrain"] / "tokenizer")
    for previous, name in zip([None, *names], names):
        model, meta = load_run(runs[name])  # every hash checks out
        assert meta["stage"] == name and meta["tokenizer_sha256"] == tokenizer
        assert TokenForecaster(runs[name]).model.config.vocab_size == 34
        if previous is None:
            assert meta["parent"] is None
        else:
            assert meta["parent"]["stage"] == previous
            assert meta["parent"]["model_sha256"] == sha256(runs[previous] / "model.eqx")
    # midtrain's default learning rate is 0.1x pretrain's; sft 0.5x midtrain's.
    lr = {n: json.loads((runs[n] / "log.jsonl").read_text().splitlines()[0])["lr"] for n in names}
    config = {n: runs[n] / "config.yaml" for n in names}
    import yaml

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
def test_rl_logs_its_reward_curve(chain):
    runs, results = chain
    entries = [json.loads(line) for line in (runs["rl"] / "log.jsonl").read_text().splitlines()]
    rewards = [e["reward_mean"] for e in entries if "reward_mean" in e]
    assert len(rewards) == 4 and all(0.0 <= r <= 1.0 for r in rewards)
    kl = [e["kl"] for e in entries if "kl" in e]
    # The policy starts as the SFT model: the first step's exact KL is 0; it grows as the policy moves.
    assert kl[0] == pytest.approx(0.0, abs=1e-6) and all(k >= 0 for k in kl) and kl[-1] > 0
    assert (runs["rl"] / "reward_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert results["rl"].metrics["reward"]["last"] == rewards[-1]


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
        run_stage(StageConfig(stage=stage, parent=str(runs[parent]), train={"steps": 1}), out)
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
        run_stage(StageConfig(stage="sft", parent=str(runs["midtrain"]), tokenizer={"path": str(tmp_path / "other")}), out)
    with pytest.raises(ConfigError, match=r"lacks column\(s\) \['x0', 'x1', 'x2'\]"):
        run_stage(StageConfig(stage="midtrain", parent=str(runs["pretrain"]), data={"names": ["sp500"]}), out)
    two = tmp_path / "two.csv"
    pd.concat([frame.assign(asset="a"), frame.assign(asset="b")]).to_csv(two, index=False)
    with pytest.raises(ConfigError, match="midtrain trains on one asset; .* holds 2 \\(a, b\\)"):
        run_stage(StageConfig(stage="midtrain", parent=str(runs["pretrain"]), data={"names": [str(two)]}), out)
    assert not out.exists()


@pytest.mark.slow  # the chain of four stage runs: ~20-30 s, shared by the tests marked so
def test_a_damaged_or_missing_parent_is_named(chain, tmp_path):
    runs, _ = chain
    damaged = tmp_path / "damaged"
    shutil.copytree(runs["sft"], damaged)
    (damaged / "model.eqx").write_bytes(b"not weights")
    with pytest.raises(ArtifactError, match="model.eqx: damaged"):
        run_stage(StageConfig(stage="rl", parent=str(damaged)), tmp_path / "out")
    with pytest.raises(ArtifactError, match="no such run folder"):
        run_stage(StageConfig(stage="rl", parent=str(tmp_path / "nowhere")), tmp_path / "out")
    with pytest.raises(ConfigError, match="--in: sft needs"):
        run_stage(StageConfig(stage="sft"), tmp_path / "out")
    with pytest.raises(ConfigError, match="reward: return_mse decodes returns with a candle tokenizer"):
        run_stage(StageConfig(stage="rl", parent=str(runs["sft"]), reward="return_mse"), tmp_path / "out")


def test_read_stage_flags_over_file_and_typos(tmp_path):
    file = tmp_path / "stage.yaml"
    file.write_text("stage: sft\nhorizon: 3\ntrain: {steps: 9}\n")
    config = read_stage(file, {"train.learning_rate": 0.01, "horizon": 4, "parent": "x"})
    assert config.horizon == 4 and config.train == {"steps": 9, "learning_rate": 0.01} and config.parent == "x"
    flags = read_stage(None, {"stage": "rl", "train.steps": 30, "data.names": ["sp500"], "reward": None})
    assert flags.train == {"steps": 30} and flags.data.names == ["sp500"] and flags.reward == "token_accuracy"
    with pytest.raises(ConfigError, match="horizn"):
        read_stage(None, {"stage": "sft", "horizn": 3})


@pytest.mark.slow  # the chain of four stage runs: ~20-30 s, shared by the tests marked so
def test_pipeline_config_and_the_comparison_table(chain):
    from chaosfm._four_stage import PipelineEvaluation, compare_stages, read_pipeline_config

    config = read_pipeline_config(CONFIGS / "four-stage.yaml")
    assert config.stage("rl", "x").reward == "return_mse"
    runs, _ = chain
    protocol = Protocol(horizon=2, num_samples=8, context_length=100, min_context=780, step=10, embargo=10)
    table, details = compare_stages(runs, PipelineEvaluation(dataset="lorenz63", options={"length": 1000}, protocol=protocol))
    assert list(table["model"]) == ["pretrain", "midtrain", "sft", "rl", "random_walk"]
    common = details["windows"]["common_fresh"]
    # Every row is scored on the same windows: those after the cutoff (row 800) and the embargo.
    assert common == len(range(810, 1000 - 2 + 1, 10)) and set(table["fresh_windows"]) == {common}
    stages = table.iloc[:4]
    assert np.all((stages["accuracy"] >= 0) & (stages["accuracy"] <= stages["top5_accuracy"]))
    assert np.all(stages["perplexity"] > 1) and np.all(np.isfinite(table["crps"]))
    # Paired differences are over the same windows: the mean difference is the difference of the means.
    paired = details["paired_vs_pretrain"]["rl"]["crps"]
    crps = dict(zip(table["model"], table["crps"]))
    assert paired["difference"] == pytest.approx(crps["rl"] - crps["pretrain"], rel=1e-9, abs=1e-12)
    assert paired["ci_low"] <= paired["difference"] <= paired["ci_high"]
