"""``chaosfm pipeline`` (``jobs.pipeline``): the config file and its stage configs, the comparison table.

The four stage runs are the ``chain`` fixture of ``conftest.py`` (shared with ``test_stage.py``).
"""

from pathlib import Path

import numpy as np
import pytest

from chaosfm._config import ConfigError
from chaosfm.evaluate import Protocol
from chaosfm.jobs import pipeline
from chaosfm.jobs.pipeline import PipelineConfig, PipelineEvaluation, compare_stages

CONFIGS = Path(__file__).parents[2] / "configs"


def test_the_preset_reads_into_four_stage_configs():
    config = pipeline.read(CONFIGS / "four-stage.yaml")
    assert config.stage_config("rl", "x").reward == "return_mse"
    sft = config.stage_config("sft", "runs/midtrain", Path("runs/sft"))
    assert sft.stage == "sft" and sft.parent == "runs/midtrain" and sft.out == Path("runs/sft")
    # The shared data keys sit under a stage's own.
    assert sft.data.cutoff == "2014-12-31" and sft.data.embargo == 5
    assert config.stage_config("midtrain", "x").data.names == ["sp500"]


def test_the_pipeline_seed_is_every_stages_and_the_protocols(tmp_path):
    config = pipeline.read(CONFIGS / "four-stage.yaml", {"seed": 11, "out": str(tmp_path)})
    assert config.out == tmp_path
    assert all(config.stage_config(name, "x").train["seed"] == 11 for name in ("pretrain", "midtrain", "sft", "rl"))
    assert config.protocol.seed == 11
    unseeded = pipeline.read(CONFIGS / "four-stage.yaml")
    assert unseeded.stage_config("pretrain", None).train["seed"] == 0  # the file's own
    assert "seed" not in unseeded.stage_config("sft", "x").train


def test_keys_the_pipeline_sets_and_typos_are_refused(tmp_path):
    base = {"evaluate": {"dataset": "lorenz63"}}
    with pytest.raises(ConfigError, match="sft.parent: set by the pipeline"):
        PipelineConfig(**base, sft={"parent": "x"}).stage_config("sft", "y")
    file = tmp_path / "p.yaml"
    file.write_text("evaluate: {dataset: lorenz63}\nsft: {horizn: 3}\n")
    with pytest.raises(ConfigError, match="horizn"):
        pipeline.read(file)  # every stage section is checked before anything runs
    with pytest.raises(ConfigError, match="out"):
        pipeline.run(PipelineConfig(**base))


@pytest.mark.slow  # the chain of four stage runs: ~20-30 s, shared by the tests marked so
def test_the_comparison_table(chain):
    runs, _ = chain
    protocol = Protocol(horizon=2, num_samples=8, context_length=100, min_context=780, step=10, embargo=10)
    table, details = compare_stages(runs, PipelineEvaluation(dataset="lorenz63", options={"length": 1000}), protocol)
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
    # The table of paired differences has one row per model but pretrain.
    assert list(pipeline.paired_table(details["paired_vs_pretrain"], 0.95)["model"]) == [
        "midtrain", "sft", "rl", "random_walk"
    ]
